"""Register the toy entries (toy_registrations.py), then run `rlhf` commands in THIS process.

    python run_cli.py train dpo model=tiny ... --nproc 1 [';;' config dpo ... ';;' eval toy_eval ...]

Commands are separated by ';;'; after each, a line 'EXIT <code>' is printed. Exits with the first non-zero
code (or 0).
"""
import sys

import toy_registrations  # noqa: F401  (registers the toys)

from rlhf_cli.cli.app import main


def run(argv) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    commands, current = [], []
    for word in sys.argv[1:]:
        if word == ";;":
            commands.append(current)
            current = []
        else:
            current.append(word)
    commands.append(current)
    first_failure = 0
    for argv in commands:
        code = run(argv)
        print(f"EXIT {code}", flush=True)
        first_failure = first_failure or code
    sys.exit(first_failure)
