"""Mask-propagation rules, one module per op family; all coupling logic lives here (see registry.py)."""
