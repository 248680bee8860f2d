"""Layer scoring: metrics, generation and evaluation, and what uses them during or before a fit."""
