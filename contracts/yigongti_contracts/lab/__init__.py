"""Contracts of the shared lab centre (医学检验共享中心)."""
