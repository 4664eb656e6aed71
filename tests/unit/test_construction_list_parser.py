"""parse_list: the list shapes LLMs answer with, and the replies that must count as unparseable."""

import pytest

from ultrachat.construction.list_parser import parse_list

ABC = ["What is A?", "What is B?", "What is C?"]


@pytest.mark.parametrize(
    "text",
    [
        "1. What is A?\n2. What is B?\n3. What is C?",
        "1) What is A?\n2) What is B?\n3) What is C?",
        "(1) What is A?\n(2) What is B?\n(3) What is C?",
        "[1] What is A?\n[2] What is B?\n[3] What is C?",
        "Q1: What is A?\nQ2: What is B?\nQ3: What is C?",
        "Question 1: What is A?\nQuestion 2: What is B?\nQuestion 3: What is C?",
        "- What is A?\n- What is B?\n- What is C?",
        "* What is A?\n* What is B?\n* What is C?",
        "• What is A?\n• What is B?\n• What is C?",
        "  1. What is A?\n  2. What is B?\n  3. What is C?",
        "1.  What is A?\n\n2.  What is B?\n\n3.  What is C?",
    ],
)
def test_numbered_and_bulleted(text):
    assert parse_list(text) == ABC


@pytest.mark.parametrize(
    "text",
    [
        '["What is A?", "What is B?", "What is C?"]',
        '```json\n["What is A?", "What is B?", "What is C?"]\n```',
        '```\n[\n  "What is A?",\n  "What is B?",\n  "What is C?"\n]\n```',
        'Sure! Here is the list:\n```json\n["What is A?", "What is B?", "What is C?"]\n```\nHope it helps.',
        'Here you go: ["What is A?", "What is B?", "What is C?"] Let me know if you need more.',
        '{"questions": ["What is A?", "What is B?", "What is C?"]}',
        '[{"question": "What is A?"}, {"question": "What is B?"}, {"question": "What is C?"}]',
        "['What is A?', 'What is B?', 'What is C?']",
    ],
)
def test_json_arrays(text):
    assert parse_list(text) == ABC


def test_arrays_inside_list_items_are_item_text():
    text = '1. What does `x = ["a", "b"]` create in Python?\n2. How do I sort `["b", "a"]`?'
    assert parse_list(text) == ['What does `x = ["a", "b"]` create in Python?', 'How do I sort `["b", "a"]`?']


def test_prose_before_and_after_is_dropped():
    text = (
        "Here are 3 questions about the alphabet:\n\n1. What is A?\n2. What is B?\n3. What is C?\n\n"
        "Let me know if you would like more questions!"
    )
    assert parse_list(text) == ABC


def test_bare_lines_with_prose_around():
    text = "Sure! Here are some subtopics:\n\nQuantum computing\nMachine learning\nRobotics\n\nI hope this helps."
    assert parse_list(text) == ["Quantum computing", "Machine learning", "Robotics"]


def test_markdown_bold_and_generic_labels():
    text = "1. **Question:** What is A?\n2. **Question:** What is B?\n3. **Question:** What is C?"
    assert parse_list(text) == ABC
    assert parse_list("**1.** What is A?\n**2.** What is B?") == ABC[:2]
    # A bold lead-in that carries content stays, only the markers go.
    assert parse_list("1. **Quantum computing**: qubits\n2. **Robotics**: arms") == [
        "Quantum computing: qubits",
        "Robotics: arms",
    ]


def test_nested_numbering_keeps_top_level():
    text = "1. Topic A\n   - detail one\n   - detail two\n2. Topic B\n   1. sub item\n3. Topic C"
    assert parse_list(text) == ["Topic A", "Topic B", "Topic C"]
    # Bullets under numbered headings are sub-items even without indentation.
    assert parse_list("1. Fruit\n- apple\n- pear\n2. Vegetables\n- leek") == ["Fruit", "Vegetables"]


def test_quotes_are_stripped():
    assert parse_list('1. "What is A?"\n2. \u201cWhat is B?\u201d\n3. \'What is C?\'') == ABC


def test_duplicates_and_empty_items_removed_in_order():
    text = "1. What is A?\n2. What is B?\n3. What is A?\n4. \"\"\n5. What is C?\n6. What is B?"
    assert parse_list(text) == ABC
    assert parse_list('["b", "a", "b", "", "a"]') == ["b", "a"]


def test_truncated_json_falls_back_to_lines():
    text = '```json\n[\n  "What is A?",\n  "What is B?",\n  "What is C'
    assert parse_list(text) == ["What is A?", "What is B?", "What is C"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n ",
        "asdf qwer",
        "I'm sorry, but I can't help with that.\nAs an AI language model, I cannot write questions.",
        "See [1] and [2] for details.",
        "[1, 2, 3]",
        "1.5 million people live in the valley.",
        "Here are the topics:",
        None,
    ],
)
def test_garbage_is_none(text):
    assert parse_list(text) is None


def test_min_items():
    assert parse_list("What is A?", min_items=2) is None
    assert parse_list("1. What is A?", min_items=2) is None
    assert parse_list("1. What is A?") == ["What is A?"]
    assert parse_list('["x", "y"]', min_items=3) is None
    # Duplicates do not count towards min_items.
    assert parse_list("- x\n- x\n- x", min_items=2) is None


def test_paragraph_lines_are_not_items():
    long_line = " ".join(["word"] * 100)
    assert parse_list(f"{long_line}\n{long_line}") is None
