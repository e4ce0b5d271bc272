"""`archbench-lmeval`: lm-evaluation-harness's command line (`lm_eval --help`) with archbench's saved runs as the model
`archbench` (harness/run/lmeval.py) registered and implied:

    archbench-lmeval --model_args run=results/default/2026-12-07_17-10-50 --tasks lambada_openai

Without lm-eval installed, or for a run that cannot be loaded: one line on stderr, exit code 2.
"""

import sys

from harness.run.build import ConfigError

SUBCOMMANDS = ("ls", "validate", "-h", "--help")  # lm-eval's commands other than `run`, passed through as they are


def lm_eval_args(args: list[str]) -> list[str]:
    """lm-eval's arguments: `run` first (lm-eval's default command), `--model archbench` unless a model is named."""
    if args[:1] and args[0] in SUBCOMMANDS:
        return args
    args = args[1:] if args[:1] == ["run"] else args
    named = any(a.split("=")[0] == "--model" for a in args)
    return ["run", *([] if named else ["--model", "archbench"]), *args]


def main(argv: list[str] | None = None) -> None:
    try:
        from lm_eval.__main__ import cli_evaluate

        import harness.run.lmeval  # noqa: F401 (registers the model `archbench`)
    except ImportError as e:
        print(f"archbench-lmeval: needs lm-evaluation-harness ({e}): pip install 'archbench[lmeval]'", file=sys.stderr)
        sys.exit(2)
    sys.argv = ["archbench-lmeval", *lm_eval_args(list(sys.argv[1:] if argv is None else argv))]
    try:
        cli_evaluate()
    except ConfigError as e:
        print(f"archbench-lmeval: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
