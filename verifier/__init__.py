"""The verifier and observer processes: continuous checks of every copy, independent counts."""
