"""Domain services: each asks the policy, then changes the store in one transaction."""
