"""Amounts as a person reads them: integer minor units turned into the reader's language by Babel (the
Unicode CLDR's number and currency formats), never by hand.

`format_money(320000, "DZD", "fr")` is `3 200,00 DZD` (with the narrow no-break space French uses), in
Arabic `‏3.200,00 د.ج.‏` (Algeria's Arabic, as the pages write it), in English `DZD 3,200.00`. The
currency's own number of decimals comes from CLDR (two for DZD, none for JPY), so an amount is never shown
in minor units. A currency written in letters right against a digit gets a no-break space, as CLDR's
currency spacing says (Babel leaves it out).
"""

from __future__ import annotations

import re
from decimal import Decimal

from babel.numbers import format_currency, get_currency_precision

LANGUAGES = ("ar", "fr", "en")
DEFAULT_LANGUAGE = "en"
# the CLDR locale of each language: Arabic as it is written in Algeria (the pages' `ar-DZ`), so that an
# amount reads the same in a message from the server and on a page
CLDR_LOCALE = {"ar": "ar_DZ", "fr": "fr", "en": "en"}
# CLDR's currencySpacing: a currency that is not a symbol ("DZD", not "$") is kept apart from its digits
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")


def format_money(amount_minor: int, currency: str, lang: str) -> str:
    """`amount_minor` of `currency` as a reader of `lang` (ar, fr or en; another is read as en) writes it."""
    value = Decimal(amount_minor).scaleb(-get_currency_precision(currency))
    text = format_currency(value, currency, locale=CLDR_LOCALE.get(lang, CLDR_LOCALE[DEFAULT_LANGUAGE]))
    return _LETTER_DIGIT.sub("\u00a0", text)


def accepted_language(accept_language: str, default: str = DEFAULT_LANGUAGE) -> str:
    """The first language of an `Accept-Language` header that is one of ours (in the header's order, `q`
    weights aside), else `default`."""
    for part in accept_language.split(","):
        code = part.split(";")[0].strip()[:2].lower()
        if code in LANGUAGES:
            return code
    return default
