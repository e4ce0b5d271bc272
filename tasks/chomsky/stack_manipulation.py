"""Stack manipulation (Delétang et al. 2023, deterministic context-free): run POP / PUSH 0 / PUSH 1 on a stack.

Source: tasks/dcf/stack_manipulation.py. Input: a stack of k bits given bottom to top (k uniform in [1, L-1]), then
L - k actions uniform in {2: POP, 3: PUSH 0, 4: PUSH 1}; a POP on an empty stack does nothing. For L = 1 the input
is one bit and the stack is that bit. Answer (L + 1 positions): the final stack top to bottom, then the termination
token 2. The source pads the answer with 0s and leaves everything after the termination token out of the accuracy;
here those positions are unscored (-100), so they are out of the loss too (the source trains on the 0s).
"""

from dataclasses import dataclass

import numpy as np

from tasks.length_generalization import LengthGeneralizationTask, bits, terminated

POP, PUSH0, PUSH1 = 2, 3, 4


def run_stack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row's tokens left to right: 0/1 and PUSH 0/1 push a bit, POP pops (if anything is there). Returns the
    final stacks, top to bottom, (n, L) with zeros past each row's height, and the heights."""
    n, length = x.shape
    stack = np.zeros((n, length + 1), dtype=np.int64)
    height = np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    for t in range(length):
        tok = x[:, t]
        push = tok != POP
        stack[rows, height] = np.where(push, np.where(tok >= PUSH0, tok - PUSH0, tok), stack[rows, height])
        height = np.where(push, height + 1, np.maximum(height - 1, 0))
    top_down = np.take_along_axis(stack, np.clip(height[:, None] - 1 - np.arange(length)[None, :], 0, None), axis=1)
    return np.where(np.arange(length)[None, :] < height[:, None], top_down, 0), height


@dataclass
class StackManipulation(LengthGeneralizationTask):
    input_size = 5
    output_size = 3

    @staticmethod
    def output_length(length: int) -> int:
        return length + 1

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if length == 1:
            x = bits(rng, (n, 1))
        else:
            k = rng.integers(1, length, size=n)
            actions = rng.integers(POP, PUSH1 + 1, size=(n, length))
            x = np.where(np.arange(length)[None, :] < k[:, None], bits(rng, (n, length)), actions)
        stack, height = run_stack(x)
        return x, terminated(stack, height, length + 1, stop=2)
