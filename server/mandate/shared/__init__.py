"""What the areas' services share: ids and look-ups (common), and things that end by themselves
(expiry)."""
