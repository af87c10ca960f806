"""End-to-end tests on the node tier: local clusters whose pods really run."""
