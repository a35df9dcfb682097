"""Tests: DirectoryService, declared resources and roles on them."""
