// What Postgres can store: no NUL in text, and no unpaired surrogate in json (its parser refuses the
// escape JSON.stringify writes for one).

/** Matches a code unit Postgres cannot store. */
export const UNSTORABLE = /\0|\p{Cs}/u;
const UNSTORABLE_ALL = new RegExp(UNSTORABLE.source, "gu");

/** The text with each code unit Postgres cannot store as U+FFFD. */
export const storable = (text: string) => (UNSTORABLE.test(text) ? text.replace(UNSTORABLE_ALL, "\uFFFD") : text);
