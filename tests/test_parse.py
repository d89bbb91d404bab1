"""Worked examples of the parse step: loop cutting, chain-of-thought display, citation attribution."""

from chatbot.rag.postprocess import cited_numbers, cut_loop, split_reasoning, supporting_passages, visible_answer


def test_a_repeated_sentence_is_cut_where_it_starts_again():
    looping = "The Growth plan is $49/month. It has 1,000 labels. The Growth plan is $49/month. It has"
    assert cut_loop(looping) == ("The Growth plan is $49/month. It has 1,000 labels.", True)


def test_the_start_of_a_possible_repeat_is_held_back_until_it_diverges():
    held = cut_loop("The Growth plan is $49/month. The Growth plan")
    assert held == ("The Growth plan is $49/month.", False)
    assert cut_loop("The Growth plan is $49/month. The Growth plan has 3 seats.")[1] is False


def test_short_repeats_like_list_markers_are_not_loops():
    assert cut_loop("1. Open Settings.\n2. Click Save.\n") == ("1. Open Settings.\n2. Click Save.\n", False)


def test_a_list_of_decimal_numbers_is_not_a_loop():
    # split at each "." these lines share the fragment "0** or later", which once cut the list after its first line
    listed = "According to [2]:\n- WordPress **6.0** or later\n- WooCommerce **7.0** or later\n- PHP **7.4** or later\n"
    assert cut_loop(listed) == (listed, False)
    assert cut_loop(listed + "- WordPress **6.0** or later\n")[1] is True


def test_chain_of_thought_shows_only_the_answer():
    assert visible_answer("Reasoning: [1] says so.") is None
    assert visible_answer("Reasoning: [1] says so.\nAnswer: Five days") == "Five days"
    assert split_reasoning("Reasoning: x.\n**Answer:** y [1].") == ("x.", "y [1].")


def test_citations_are_read_in_order_of_first_appearance():
    assert cited_numbers("A [2]. B [1]. C [2].") == [2, 1]


def test_an_answer_is_attributed_to_the_passages_it_draws_on():
    passages = [
        "Refunds for unused labels take 5 business days to reach your postage wallet.",
        "The Growth plan costs $49 per month and includes 1,000 labels.",
    ]
    answer = "The Growth plan costs $49 per month. Unused label refunds take 5 business days."
    assert supporting_passages(answer, passages) == [2, 1]
    assert supporting_passages("I am not sure about that at all, sorry.", passages) == []
    echo = "The Growth plan costs money."
    assert supporting_passages(echo, passages, question="What does the Growth plan cost?") == []
