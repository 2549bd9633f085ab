"""How the tests decide that an error message names the bad argument."""
import re


def names_an_argument(msg: str, names) -> bool:
    """True when ``msg`` names one of ``names`` as the subject of the error:
    at the start of the message (optionally after ``"function: "``) or quoted
    (``'a'``, ``"a"``, `` `a` ``).  A bare word inside the sentence does not
    count (``"must be a float"`` does not name an argument ``a``)."""
    alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    if re.match(rf"^(\w+: )?({alt})(?![\w])", msg):
        return True
    return re.search(rf"['\"`]({alt})['\"`]", msg) is not None
