"""Static analysis and explanation of a knowledge base, for its authors (issue 4).

One job per module:
  * `structure`  - what can be seen without a solver: the derivation graph and its cycles, facts and
                   catalogue codes nothing reads or concludes, window words against window figures;
  * `encoding`   - the knowledge base's semantics (three-valued facts, rule firing, derived facts as the
                   least fixpoint, urgency and action windows) as propositional formulas for z3;
  * `checks`     - `lumbar-kb check`: every check and safety invariant, each finding with a patient;
  * `reproduce`  - re-evaluates every counterexample with the engine, so no finding rests on the encoding;
  * `escalation` - `could_escalate` for every Result (plain re-evaluation, no solver);
  * `explain`    - `lumbar-kb explain --why / --why-not`;
  * `coverage`   - `lumbar-kb test`: scenarios, rule and conclusion coverage, minimal scenarios.

Only `escalation` is imported by the evaluator; everything that needs z3 imports it lazily, so evaluating
patients never loads the solver.
"""
