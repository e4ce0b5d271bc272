"""State tracking: permutation word problems (Merrill et al. 2024) and parity / modular arithmetic as Grazzi et al.
2025 ran them (the xLSTM formal-language formulation), on the protocol of tasks/length_generalization.py."""
