"""Tests: PartnerService and the partner program's rules."""
