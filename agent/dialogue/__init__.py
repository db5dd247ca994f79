"""What the bot says and does between hearing and speaking."""
