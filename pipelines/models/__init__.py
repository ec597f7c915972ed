"""Models: one file per model, each an nn.Module built from a frozen config dataclass."""
