"""The demo's threads: tiny work on one thread, the image part on whichever count runs its model call faster."""
import time

import torch

from app import demo


def test_fastest_threads_keeps_the_faster_count_and_restores_the_setting():
    before = torch.get_num_threads()
    seen = []

    def work():  # slower on one thread, as a large model call would be
        seen.append(torch.get_num_threads())
        time.sleep(0.02 if torch.get_num_threads() == 1 else 0.001)

    best, seconds = demo.fastest_threads(work, (1, 2))
    assert best == 2 and seconds[1] > seconds[2] and set(seen) == {1, 2}
    assert torch.get_num_threads() == before

    def tiny():  # slower on two threads, as tiny work on a shared machine is
        time.sleep(0.02 if torch.get_num_threads() == 2 else 0.001)

    assert demo.fastest_threads(tiny, (2, 1))[0] == 1


def test_analytic_table_runs_on_one_thread_unless_told(capsys, monkeypatch):
    used = []
    monkeypatch.setattr(demo, "analytic_table", lambda nfes: used.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    demo.print_analytic_table((5,))
    demo.print_analytic_table((5,), threads=2)
    assert used == [1, 2] and torch.get_num_threads() == before
    assert "analytic table:" in capsys.readouterr().out
