"""Tests: MembershipService and the membership rules."""
