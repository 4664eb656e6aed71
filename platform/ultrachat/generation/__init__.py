"""Dialogue generation: UltraChat's user-simulator/assistant loop on Ray Data actor pools."""
