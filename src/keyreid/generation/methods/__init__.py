"""The registered generation methods (pngan, fdgan, ipgan); each module registers itself with
keyreid.generation.method.register_method when imported."""
