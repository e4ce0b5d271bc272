"""Sequence mixers, one per file, each a subclass of `models.mixers.base.Mixer` (the contract, as code: constructor
signature with every option named, typed and its range declared, forward, flops_per_token, no_weight_decay) and
registered by a YAML file in conf/model/mixer/ that lists every option with the class's default. Mixers that set
`accepts_position = True` also take a `position=` module (rope, ALiBi) that acts on their queries and keys.
"""
