"""The 15 tasks of Delétang et al. 2023, "Neural Networks and the Chomsky Hierarchy" (ICLR), with the semantics of
google-deepmind/neural_networks_chomsky_hierarchy `tasks/` (one module each, named as there). The protocol (train
lengths, test splits per length, blanks after the input, the score) is tasks/length_generalization.py."""
