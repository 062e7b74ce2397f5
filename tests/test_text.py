import pytest

from rnnlab.data.codec import TextCodec
from rnnlab.data.text import PAD, UNK, Vocabulary, imdb_tokenize


def test_imdb_tokenize_drops_html_keeps_emoticons_lowercases():
    text = "This <br /><br />Movie was GREAT :-) but the end... :( ;P"
    assert imdb_tokenize(text) == ["this", "movie", "was", "great", "but", "the", "end", "p", ":)", ":(", ";P"]


def test_imdb_tokenize_splits_on_non_word_runs():
    assert imdb_tokenize("well-made, isn't it?") == ["well", "made", "isn", "t", "it"]
    assert imdb_tokenize("") == []


def test_vocabulary_specials_first_then_by_frequency():
    vocab = Vocabulary.build([["b", "a", "b"], ["c", "b", "a"]])
    assert vocab.itos == [PAD, UNK, "b", "a", "c"]
    assert vocab.pad_index == 0 and vocab.unk_index == 1
    assert vocab.encode(["a", "zzz"]) == [3, 1]
    assert vocab.decode([2, 4]) == ["b", "c"]


def test_vocabulary_min_freq_and_max_size_count_specials():
    texts = [["x"] * 3 + ["y"] * 2 + ["z"]]
    assert Vocabulary.build(texts, min_freq=2).itos == [PAD, UNK, "x", "y"]
    assert Vocabulary.build(texts, max_size=3).itos == [PAD, UNK, "x"]


def test_vocabulary_trailing_tokens_go_last():
    vocab = Vocabulary.build([["a"]], specials=(UNK,), trailing=(PAD,))
    assert vocab.itos == [UNK, "a", PAD] and vocab.pad_index == 2


@pytest.mark.parametrize("level", ["char", "word"])
def test_backward_codec_reads_prompts_end_first_and_writes_in_reading_order(level):
    itos = ["<pad>", "a", "b", "c", " "]
    forward = TextCodec(itos, level=level)
    backward = TextCodec(itos, level=level, reverse=True)
    prompt = "a b c" if level == "word" else "abc"
    assert backward.encode(prompt) == forward.encode(prompt)[::-1] != forward.encode(prompt)
    assert backward.decode(backward.encode(prompt)) == prompt
    assert TextCodec.from_dict(backward.to_dict()).reverse
    # what a backward model writes comes before its prompt
    assert backward.join(prompt, "c") == ("c a b c" if level == "word" else "cabc")
    assert forward.join(prompt, "c") == ("a b c c" if level == "word" else "abcc")
