"""Backend adapters: one module per backend, each imported lazily."""
