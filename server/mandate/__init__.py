"""Mandate: policy-driven authorization for agencies, partners and their clients."""
