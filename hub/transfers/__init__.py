"""Transfers: approved share requests carried out by the agents."""
