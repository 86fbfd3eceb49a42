"""``python -m floworchestrator``: the same as the ``floworchestrator`` command."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="floworchestrator")
