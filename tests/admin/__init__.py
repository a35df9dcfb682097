"""Tests: AdminService: import, export, erase."""
