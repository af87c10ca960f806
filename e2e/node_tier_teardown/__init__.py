"""Teardown of node environments, checked while no other node environment runs (this
package comes after ``e2e/node_tier``, whose shared environment is gone by then), so that
the machine-wide state before and after can be compared."""
