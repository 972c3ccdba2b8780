"""Helpers shared by both stages: image I/O, checkpoint I/O, TensorBoard grids, seeding, CLI errors."""
