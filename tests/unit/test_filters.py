"""Post-processing filters of a generated dialogue: what is dropped, what is trimmed, what is kept."""

import pytest

from ultrachat.config.generation import Filters
from ultrachat.generation.filters import DialogueFilter, FilterOutcome, apply_filters

PARAGRAPH = (
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light into "
    "chemical energy. Chlorophyll in the chloroplasts absorbs mostly red and blue light, and the "
    "energy splits water molecules, releasing oxygen. The captured energy is stored as ATP and NADPH, "
    "which the Calvin cycle then uses to fix carbon dioxide into sugars that feed the plant."
)
POEM = """The river runs where no one goes,
and still the river sings.
It carries leaves and melted snows
and all the smaller things.

It passes towns that never wake,
it passes fields of rye,
and still the river sings.
It does not stop, it does not break,
it only wonders why."""
ROUNDS = [
    ("What is photosynthesis?", PARAGRAPH),
    ("Why are most plants green rather than black?", "Chlorophyll reflects green light instead of absorbing it."),
    ("Could you write a short poem about a river?", POEM),
    ("Nice. Which plants do not photosynthesize at all?", "Parasitic plants such as dodder take sugar from hosts."),
]


def dialogue(*rounds, tail=None):
    """Messages of the given (user, assistant) rounds plus an optional trailing user turn."""
    messages = [{"role": r, "content": c} for pair in rounds for r, c in zip(("user", "assistant"), pair)]
    if tail is not None:
        messages.append({"role": "user", "content": tail})
    return messages


def stops(messages, cut=None):
    """Finish reasons: None for the opening line, "stop" for generated turns, "length" at index cut."""
    reasons = [None] + ["stop"] * (len(messages) - 1)
    if cut is not None:
        reasons[cut] = "length"
    return reasons


def run(messages, finish=None, **config):
    return apply_filters(messages, finish or stops(messages), Filters(**config))


def test_clean_multi_round_dialogue_passes_unchanged():
    messages = dialogue(*ROUNDS)
    outcome = run(messages)
    assert outcome == FilterOutcome(messages, "kept", [])
    assert outcome.kept


# --- user_role_slip ---------------------------------------------------------------------------

@pytest.mark.parametrize("slip", [
    "As an AI language model, I can tell you that rivers are fascinating.",
    "I'm an AI, so I cannot really go to the river.",
    "How can I assist you further today?",
    "Is there anything else I can help you with?",
    "I'd be happy to help with more poems.",
    "Sure! Here is another poem about the sea:",
    "Certainly, here's a summary of what we discussed.",
    "You're welcome! Let me know if you need more.",
    "Rivers are lovely. I hope this helps!",
    "I'm so sorry to hear that. I'm glad you reached out.",
    "I'm glad you're taking steps to manage your sleep.",
    "I'm here to help, to offer guidance and to share my knowledge.",
    "I'm sorry for the confusion. Here is the recipe again.",
    "Let me know if you have more questions about rivers.",
])
def test_user_role_slip_cuts_before_the_slipped_turn(slip):
    messages = dialogue(*ROUNDS[:3], (slip, "Thank you!"))
    outcome = run(messages)
    assert outcome.status == "kept" and outcome.reasons == ["trimmed:user_role_slip"]
    assert outcome.messages == messages[:6]


@pytest.mark.parametrize("question", [
    "How can I help my son learn fractions?",
    "Is there anything else I can do to improve my sleep?",
    "Here is my draft, can you improve it? The river runs.",
    "What does it mean when a chatbot says it is an AI?",
    "I'm glad you mentioned caffeine. How late is too late for coffee?",
    "I'm sorry, I don't follow. Why would the river flood?",
])
def test_user_turn_that_only_sounds_similar_is_not_a_slip(question):
    messages = dialogue(ROUNDS[0], (question, "Here is what I suggest."))
    assert run(messages).status == "kept"


def test_opening_line_is_never_a_slip():
    messages = dialogue(("As an AI language model, what would you do?", "I would answer questions."))
    assert run(messages).status == "kept"


def test_user_role_slip_extra_pattern_and_disabled_flag():
    messages = dialogue(ROUNDS[0], ("Beep boop, human.", "Hello."), ROUNDS[1])
    assert run(messages).status == "kept" and run(messages).messages == messages
    outcome = run(messages, user_role_slip_patterns=[r"\bbeep boop\b"])
    assert outcome.reasons == ["trimmed:user_role_slip"] and outcome.messages == messages[:2]
    slipped = dialogue(ROUNDS[0], ("As an AI, I agree.", "Fine."))
    assert run(slipped, user_role_slip=False) == FilterOutcome(slipped, "kept", [])


# --- polite_closing ----------------------------------------------------------------------------

@pytest.mark.parametrize("thanks", [
    "Thank you", "Thanks!", "Thanks a lot, that was helpful.", "Great, thanks",
    "Appreciate it", "Thank you so much for your help!", "thanks for explaining all that, bye",
    "Wow, thank you so much for the detailed poem! I'll definitely keep it in mind. \U0001F60A",
    "That was really helpful, I appreciate it.", "Thanks and have a nice day!",
    "Thank you \u2014 I\u2019m grateful for your time.", "That's very kind of you, thanks",
])
def test_polite_closing_is_trimmed_with_its_answer(thanks):
    messages = dialogue(*ROUNDS[:2], (thanks, "You're welcome! Let me know if you need anything else."))
    outcome = run(messages)
    assert outcome == FilterOutcome(messages[:4], "kept", ["trimmed:polite_closing"])


@pytest.mark.parametrize("turn", [
    "Thanks! Can you also tell me how deep the Amazon river is?",
    "Thank you, now give me a recipe for pancakes.",
    "Thanks for that. what are the risks of too much sun",
    "Thanks for the poem, now write one about the sea",
    "Okay, got it.",  # an acknowledgement without thanks is not a polite closing
    "Great. Tell me more about chlorophyll.",
])
def test_thanks_with_a_real_request_is_kept(turn):
    messages = dialogue(*ROUNDS[:2], (turn, "Here you go."))
    assert run(messages, truecase=False) == FilterOutcome(messages, "kept", [])


def test_polite_turn_in_the_middle_removes_only_its_pair():
    messages = dialogue(ROUNDS[0], ("Thanks!", "You're welcome!"), ROUNDS[1])
    outcome = run(messages)
    assert outcome.messages == dialogue(ROUNDS[0], ROUNDS[1])
    assert outcome.reasons == ["trimmed:polite_closing"]


def test_polite_closing_extra_pattern_and_disabled_flag():
    messages = dialogue(ROUNDS[0], ("Cheerio, mate!", "Goodbye!"))
    assert run(messages).messages == messages
    assert run(messages, polite_closing_patterns=[r"cheerio(?: mate)?"]).messages == messages[:2]
    by_clause = dialogue(ROUNDS[0], ("Thanks, cheerio!", "Goodbye!"))
    assert run(by_clause, polite_closing_patterns=["cheerio"]).messages == messages[:2]
    asking = dialogue(ROUNDS[0], ("Cheerio! Where is the station", "Left."))
    assert run(asking, polite_closing_patterns=["cheerio"]).messages == asking
    thanked = dialogue(ROUNDS[0], ("Thanks!", "You're welcome!"))
    assert run(thanked, polite_closing=False) == FilterOutcome(thanked, "kept", [])


# --- assistant_disclaimer --------------------------------------------------------------------

@pytest.mark.parametrize("reply", [
    "I'm just an AI, so I can't taste food.",
    "As a language model, I cannot browse the web.",
    "As an AI, I agree that tea is popular.",
])
def test_assistant_disclaimer_drops_the_dialogue(reply):
    messages = dialogue(ROUNDS[0], ("Which do you prefer, tea or coffee?", reply))
    outcome = run(messages)
    assert outcome == FilterOutcome(messages, "filtered:assistant_disclaimer", ["assistant_disclaimer"])
    assert not outcome.kept


@pytest.mark.parametrize("reply", [
    "As an AI researcher, you should read the attention paper first.",
    "Users often tell me they don't have opinions on tea.",
    "The AI in the film says it has no feelings, which is the twist.",
])
def test_reply_about_ai_without_disclaiming_is_kept(reply):
    assert run(dialogue(("Tell me something.", reply))).status == "kept"


def test_assistant_disclaimer_extra_pattern_and_disabled_flag():
    messages = dialogue(("Hi", "My knowledge cutoff prevents me from answering."))
    assert run(messages).status == "kept"
    extra = run(messages, assistant_disclaimer_patterns=[r"knowledge cutoff"])
    assert extra.status == "filtered:assistant_disclaimer"
    disclaimed = dialogue(("Hi", "As an AI, I have no feelings."))
    assert run(disclaimed, assistant_disclaimer=False).status == "kept"


# --- feelings_disclaimer (ultrachat_200k) ------------------------------------------------------

FEELINGS = [
    "As an AI, I do not have personal opinions, but many people prefer tea.",
    "I don't have personal experiences with rivers, but they are described as calming.",
    "As an AI language model I don't have feelings.",
    "I do not have the ability to feel emotions.",
]


@pytest.mark.parametrize("reply", FEELINGS)
def test_feelings_disclaimer_trims_its_round_and_what_follows(reply):
    messages = dialogue(ROUNDS[0], ("Which do you prefer, tea or coffee?", reply), ROUNDS[1])
    assert run(messages) == FilterOutcome(messages[:2], "kept", ["trimmed:feelings_disclaimer"])


@pytest.mark.parametrize("reply", FEELINGS)
def test_feelings_disclaimer_drop_mode_drops_the_dialogue_as_ultrachat_200k_did(reply):
    messages = dialogue(ROUNDS[0], ("Which do you prefer, tea or coffee?", reply))
    outcome = run(messages, feelings_disclaimer="drop")
    assert outcome == FilterOutcome(messages, "filtered:feelings_disclaimer", ["feelings_disclaimer"])


def test_feelings_disclaimer_in_the_first_round_drops_and_off_keeps():
    messages = dialogue(("Do you like tea?", "I don't have personal preferences, but tea is popular."))
    assert run(messages).status == "filtered:feelings_disclaimer"
    assert run(messages, feelings_disclaimer="off").status == "kept"
    extra = dialogue(("Hi", "I lack any sentiment about it."), ROUNDS[0])
    assert run(extra, feelings_disclaimer_patterns=[r"lack any sentiment"]).status == "filtered:feelings_disclaimer"


# --- truecase (ultrachat_200k) ------------------------------------------------------------------

def test_truecase_rewrites_what_is_kept_and_records_it():
    messages = dialogue(("hello. how are you? i wonder.", "i am fine. thanks for asking! see `foo.bar()` e.g. here."),
                        ("ok. and you?", "all good. i think so."))
    outcome = run(messages)
    assert [m["content"] for m in outcome.messages] == [
        "hello. how are you? i wonder.",  # the opening line is input: kept as given
        "I am fine. Thanks for asking! See `foo.bar()` e.g. here.", "Ok. And you?", "All good. I think so."]
    assert outcome.reasons == ["rewritten:truecase"] and outcome.kept
    assert run(messages, truecase=False).messages == messages


@pytest.mark.parametrize("text", [POEM, PARAGRAPH, "Use the iPhone. pH matters. x86 and snake_case stay.",
                                  "See https://example.com/a.b and `x. y` and i.e. this, e.g. that. So do i.", "(i) one (ii) two"])
def test_truecase_leaves_correct_or_special_text_alone(text):
    from ultrachat.generation.truecase import truecase

    assert truecase(text) == text


# --- empty_turn --------------------------------------------------------------------------------

@pytest.mark.parametrize("index", [1, 2, 3])
def test_empty_or_whitespace_turn_drops(index):
    messages = dialogue(*ROUNDS[:2])
    messages[index]["content"] = "  \n\t"
    assert run(messages) == FilterOutcome(messages, "filtered:empty_turn", ["empty_turn"])


def test_empty_turn_disabled_still_never_keeps_an_unanswered_user_turn():
    messages = dialogue(*ROUNDS[:2], tail=" ")
    outcome = run(messages, empty_turn=False)
    assert outcome == FilterOutcome(messages[:4], "kept", ["trimmed:unanswered_turn"])


# --- length_cut --------------------------------------------------------------------------------

def test_cut_last_assistant_turn_trims_the_last_round():
    messages = dialogue(*ROUNDS[:3])
    outcome = run(messages, stops(messages, cut=5))
    assert outcome == FilterOutcome(messages[:4], "kept", ["trimmed:length_cut"])


def test_cut_last_user_turn_trims_the_last_round():
    messages = dialogue(*ROUNDS[:3])
    assert run(messages, stops(messages, cut=4)).messages == messages[:4]


def test_cut_turn_in_the_middle_drops():
    messages = dialogue(*ROUNDS[:3])
    outcome = run(messages, stops(messages, cut=3))
    assert outcome == FilterOutcome(messages, "filtered:length_cut", ["length_cut"])


def test_cut_only_round_drops():
    messages = dialogue(ROUNDS[0])
    assert run(messages, stops(messages, cut=1)).status == "filtered:length_cut"


def test_length_cut_disabled():
    messages = dialogue(*ROUNDS[:2])
    assert run(messages, stops(messages, cut=1), length_cut=False).status == "kept"


# --- repetition --------------------------------------------------------------------------------

@pytest.mark.parametrize("reply", [
    "the same " * 15,
    "Sure, " + "very " * 8 + "good.",
    "Here is the answer. " + "I am sorry for the confusion. " * 6,
    "\n".join(["Photosynthesis turns light into sugar inside the leaf."] * 4 + ["That is all."]),
])
def test_degenerate_repetition_drops(reply):
    messages = dialogue(("Say something.", reply))
    assert run(messages) == FilterOutcome(messages, "filtered:repetition", ["repetition"])


@pytest.mark.parametrize("reply", [
    PARAGRAPH,
    POEM,  # its refrain line appears twice
    "[[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]] is a zero matrix.",
    "Yes yes, " + "it works well. " * 2,  # too short to judge by share
])
def test_normal_text_is_not_repetition(reply):
    assert run(dialogue(("Say something.", reply))).status == "kept"


def test_repetition_share_and_disabled_flag():
    reply = "Paris is lovely in spring. " * 3 + PARAGRAPH  # the sentence covers 20% of the tokens
    messages = dialogue(("Tell me about Paris.", reply))
    assert run(messages, repetition_max_share=0.2).status == "kept"
    assert run(messages, repetition_max_share=0.19).status == "filtered:repetition"
    assert run(dialogue(("Hi", "the same " * 15)), repetition=False).status == "kept"


# --- interplay, shape, config errors -----------------------------------------------------------

def test_content_a_trim_removes_never_drops_the_dialogue():
    slipped = ("As an AI language model, I enjoy rivers.", "As an AI, I agree with you.")
    messages = dialogue(*ROUNDS[:2], slipped)
    finish = stops(messages, cut=5)
    outcome = run(messages, finish)
    assert outcome == FilterOutcome(messages[:4], "kept", ["trimmed:user_role_slip"])


def test_trims_combine_and_drop_when_no_round_remains():
    messages = dialogue(ROUNDS[0], ("Thanks!", "You're welcome!"), ROUNDS[1])
    outcome = run(messages, stops(messages, cut=5))
    assert outcome == FilterOutcome(messages[:2], "kept", ["trimmed:polite_closing", "trimmed:length_cut"])
    emptied = dialogue(ROUNDS[0], ("As an AI, I agree.", "Fine."))
    outcome = run(emptied, stops(emptied, cut=1))
    assert outcome == FilterOutcome(emptied[:2], "filtered:length_cut", ["trimmed:user_role_slip", "length_cut"])


def test_lone_opening_line_is_dropped_as_unanswered():
    messages = dialogue(tail="Hello there")
    assert run(messages) == FilterOutcome(messages, "filtered:unanswered_turn", ["unanswered_turn"])


@pytest.mark.parametrize("messages, finish", [
    ([], []),
    ([{"role": "user", "content": "Hi"}], [None, "stop"]),
    ([{"role": "assistant", "content": "Hi"}], [None]),
])
def test_malformed_input_raises(messages, finish):
    with pytest.raises(ValueError):
        run(messages, finish)


@pytest.mark.parametrize("key", ["user_role_slip_patterns", "polite_closing_patterns",
                                 "assistant_disclaimer_patterns", "feelings_disclaimer_patterns"])
def test_bad_extra_regex_is_rejected_at_construction(key):
    with pytest.raises(ValueError, match=rf"filters\.{key}\[1\]: invalid regex '\(unclosed'"):
        DialogueFilter(Filters(**{key: ["fine", "(unclosed"]}))


def test_one_filter_serves_many_dialogues():
    dialogue_filter = DialogueFilter(Filters())
    clean, thanked = dialogue(*ROUNDS[:2]), dialogue(ROUNDS[0], ("Thanks!", "You're welcome!"))
    assert dialogue_filter(clean, stops(clean)).status == "kept"
    assert dialogue_filter(thanked, stops(thanked)).reasons == ["trimmed:polite_closing"]
    assert clean == dialogue(*ROUNDS[:2])  # inputs are never modified
