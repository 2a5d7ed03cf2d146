// What the server's pages do first, the same way: take the token from the link's fragment (then keep it
// off the address bar and out of the history), read what the token says (to choose what to show, never
// trusted: the server decides what it may do), and choose the language (?lang=, the reader's last choice,
// the browser's, else Arabic).
window.PAGE = (() => {
  "use strict";

  function token(storeKey) {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.get("token")) {
      sessionStorage.setItem(storeKey + ":token", fragment.get("token"));
      history.replaceState(null, "", location.pathname + location.search);
      return fragment.get("token");
    }
    return sessionStorage.getItem(storeKey + ":token");
  }

  function forget(storeKey) {
    sessionStorage.removeItem(storeKey + ":token");
  }

  function claims(tok) {
    try {
      const part = tok.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const bytes = Uint8Array.from(atob(part + "=".repeat((4 - (part.length % 4)) % 4)), (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      return null;
    }
  }

  function language(words, storeKey) {
    const asked = new URLSearchParams(location.search).get("lang") || localStorage.getItem(storeKey + ":lang")
      || (navigator.language || "ar").slice(0, 2);
    return words[asked] ? asked : "ar";
  }

  // The reader's choice of language, kept for the next visit and written in the address, whose ?lang= would
  // otherwise undo it on a reload.
  function rememberLanguage(storeKey, lang) {
    localStorage.setItem(storeKey + ":lang", lang);
    const address = new URL(location.href);
    address.searchParams.set("lang", lang);
    history.replaceState(history.state, "", address.pathname + address.search);
  }

  // t(lang, key, vars): the words of `key` in `lang` (English when missing), with {name} filled from vars
  function translator(words) {
    return (lang, key, vars) => {
      const text = (words[lang] && words[lang][key]) || words.en[key] || key;
      return text.replace(/\{(\w+)\}/g, (_, k) => (vars && vars[k] != null ? vars[k] : ""));
    };
  }

  const locale = (lang) => (lang === "ar" ? "ar-DZ" : lang === "fr" ? "fr-FR" : "en-GB");

  // an amount in minor units, in the reader's language, with the currency's own number of decimals
  function money(lang, minor, currency) {
    const format = new Intl.NumberFormat(locale(lang), { style: "currency", currency });
    return format.format(minor / 10 ** format.resolvedOptions().maximumFractionDigits);
  }

  return { token, forget, claims, language, rememberLanguage, translator, locale, money };
})();
