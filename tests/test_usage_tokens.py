from proxy.usage.tokens import (
    IMAGE_TOKENS, MESSAGE_OVERHEAD, REPLY_PRIMER, estimate_prompt_tokens, estimate_text_tokens,
)


def test_text_is_one_token_per_four_characters_rounded_up():
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abc") == 1
    assert estimate_text_tokens("abcd") == 1
    assert estimate_text_tokens("abcde") == 2
    assert estimate_text_tokens("x" * 400) == 100


def test_chat_counts_string_and_text_parts_with_framing():
    body = {"messages": [
        {"role": "system", "content": "x" * 40},
        {"role": "user", "content": [
            {"type": "text", "text": "y" * 8},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ]},
    ]}
    expected = REPLY_PRIMER + 2 * MESSAGE_OVERHEAD + 10 + 2 + IMAGE_TOKENS
    assert estimate_prompt_tokens("chat", body) == expected


def test_chat_counts_names_tool_calls_and_tools():
    bare = {"messages": [{"role": "assistant", "content": None}]}
    rich = {
        "messages": [{"role": "assistant", "content": None, "name": "abcd",
                      "tool_calls": [{"function": {"name": "abcd", "arguments": "x" * 16}}]}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    assert estimate_prompt_tokens("chat", rich) > estimate_prompt_tokens("chat", bare) + 1 + 1 + 4


def test_completions_prompt_shapes():
    assert estimate_prompt_tokens("completions", {"prompt": "x" * 8}) == 2
    assert estimate_prompt_tokens("completions", {"prompt": ["x" * 8, "y" * 4]}) == 3
    assert estimate_prompt_tokens("completions", {"prompt": [1, 2, 3]}) == 3
    assert estimate_prompt_tokens("completions", {"prompt": [[1, 2], [3, 4, 5]]}) == 5


def test_embeddings_input_shapes():
    assert estimate_prompt_tokens("embeddings", {"input": "x" * 12}) == 3
    assert estimate_prompt_tokens("embeddings", {"input": ["x" * 4, "y" * 5]}) == 3
    assert estimate_prompt_tokens("embeddings", {"input": [7, 8]}) == 2
    assert estimate_prompt_tokens("embeddings", {"input": [[7, 8], [9]]}) == 3


def test_malformed_bodies_count_nothing_instead_of_raising():
    assert estimate_prompt_tokens("chat", {"messages": "hi"}) == 0
    odd = {"messages": [None, 3, {"content": 5}]}
    assert estimate_prompt_tokens("chat", odd) == REPLY_PRIMER + MESSAGE_OVERHEAD
    assert estimate_prompt_tokens("completions", {"prompt": {"a": 1}}) == 0
    assert estimate_prompt_tokens("embeddings", {}) == 0
    assert estimate_prompt_tokens("images", {"prompt": "x"}) == 0
