"""The search loop: ``tuner.ask()`` -> evaluate (the launcher) -> the study -> ``tuner.tell()``
-> the generation's end, until the tuner has nothing more to ask.

Everything the loop works with is set up by :mod:`nasfw.prepare` (a :class:`Search`); a
generation is evaluated and ended by :mod:`nasfw.generation`, the same way for the synchronous
loop here, the asynchronous one (:mod:`nasfw.asynchronous`) and ``search_space=auto``'s probe.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nasfw import signals
from nasfw.asynchronous import run_asynchronous
from nasfw.generation import end_generation, evaluate

if TYPE_CHECKING:
    from nasfw.run import Search


def run_loop(search: Search) -> None:
    """Run the search's generations: ``nasfw_search_start``, the space settled
    (:meth:`nasfw.run.SpaceChoice.before_first_generation`), then generations,
    synchronous or asynchronous (``tuner.asynchronous``), until the tuner is done."""
    search.hook.nasfw_search_start(context=search.context)
    search.space_choice.before_first_generation(search)
    if search.asynchronous:
        run_asynchronous(search)
    else:
        run_synchronous(search)


def run_synchronous(search: Search) -> None:
    """One generation at a time: ``tuner.ask()``, all its candidates evaluated, ``tell``."""
    context = search.context
    generation = context.start_generation
    started = time.perf_counter()
    while True:
        signals.check()  # a stop that library code swallowed ends the search here
        if not (candidates := context.tuner.ask()):
            break
        search.hook.nasfw_generation_start(
            context=context, generation=generation, candidates=candidates
        )
        trials = evaluate(search, candidates, generation)
        context.tuner.tell(candidates, [t.result for t in trials])
        end_generation(search, generation, trials, time.perf_counter() - started)
        generation += 1
        started = time.perf_counter()  # tracking and reporting are not the generation's
