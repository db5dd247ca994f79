"""Configuration, validated once: config.yaml (service), prompts/<bot>.yaml (bot), and their YAML loading."""
