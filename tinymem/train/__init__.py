"""On-device training: sparse-update schemes, their memory, the reference arithmetic (docs/training.md)."""
