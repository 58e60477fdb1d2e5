"""Facts the guideline itself names, written out from its text (not read from the knowledge base under test),
for the tests that need them."""

# the neurological signs the guideline names: its five red-flag symptoms (decreased strength in the legs,
# difficulty controlling the legs or a very wobbly gait, radiating numbness or tingling, inability to walk or
# stand, new bowel or bladder dysfunction), saddle anesthesia ("When to Seek Immediate Care") and progressive
# neurological deficits; each one means an emergency
NEUROLOGICAL = (
    "leg_weakness",
    "gait_difficulty",
    "radiating_numbness",
    "unable_to_walk",
    "bowel_bladder_dysfunction",
    "saddle_anesthesia",
    "progressive_neuro_deficit",
)
