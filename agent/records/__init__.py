"""Call records: what the service keeps about each call and how it shows it (reports, words for actions)."""
