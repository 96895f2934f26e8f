"""Hypothesis strategies shared by the fuzzers: hostile strings and Kubernetes-shaped pieces.

Hostile strings carry what breaks naive templating and shells: command substitution, quotes,
newlines that start a new YAML key, Go-template braces, YAML scalars that change type.
"""

from __future__ import annotations

from hypothesis import strategies as st

SHELL_PAYLOADS = (
    "$(touch /tmp/pwned)", "`id`", "a; rm -rf /", "x && curl http://127.0.0.1:1", "a|b", "'quoted'",
    '"dq"', "line\nkind: Secret", "{{ .Release.Name }}", "key: value", "- item", "#comment", "*", "~",
    "${HOME}", "a b", "--flag", "-c", "null", "true", "0x1F", "1e3", "..", "../etc/passwd", "\t", "",
    "a" * 64, "A" * 300, "Ω-unicode", "-leading-dash", "trailing-dash-", "UPPER", "dot.ted", "x" * 63,
)

dns_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")
dns_label_long = st.from_regex(r"\A[a-z]([-a-z0-9]{40,70}[a-z0-9])?\Z")
free_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\n\t"),
    max_size=30,
)
hostile = st.sampled_from(SHELL_PAYLOADS) | free_text
name_like = st.one_of(dns_label, dns_label_long, hostile)

label_key = st.one_of(
    st.from_regex(r"\A([a-z0-9]{1,10}\.)?[a-z0-9]{1,8}/[A-Za-z0-9][-A-Za-z0-9_.]{0,10}\Z"),
    st.from_regex(r"\A[A-Za-z0-9][-A-Za-z0-9_.]{0,20}[A-Za-z0-9]\Z"),
    hostile,
)
label_value = st.one_of(st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?\Z"), hostile)
labels = st.dictionaries(label_key, label_value, max_size=3)
wrong_type = st.one_of(
    st.integers(-5, 5), st.text(max_size=4), st.lists(st.integers(), max_size=2), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), free_text,
                        st.floats(allow_nan=False, allow_infinity=False))
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(free_text, inner, max_size=3),
    max_leaves=8,
)


def sometimes_wrong(good: st.SearchStrategy, wrong_weight: int = 1) -> st.SearchStrategy:
    """Mostly `good`, sometimes a value of the wrong type."""
    return st.one_of(*([good] * 4), *([wrong_type] * wrong_weight))
