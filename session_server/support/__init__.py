"""Support staff watch over live sessions: the board, problem tickets and the audit (docs/support.md)."""
