"""Model definitions (torch), below training and export: the architectures and their heads, the
deployable wrapper (probabilities, optionally with class activation maps), and the checkpoint format
that training writes and export and the torch back-end read."""
