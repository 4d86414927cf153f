// What JSON text will cost JSON.parse, read before it is parsed. The cost follows what the text
// builds, not its bytes: on this project's machines 1 MiB of `[{},{},…]` builds 350,000 objects in
// about 180 ms, 1 MiB of long strings in 2 ms, and the event loop stands still meanwhile. Bodies and
// messages are bounded in pieces (each `{`, `[`, `,` and `:` outside a string: about one a key or
// value), so that what one client sends holds up every other for a few ms at most.

export type JsonLimits = {
  maxPieces: number;
  /** For the items of the one array that a top-level object holds (see `Scan.array`). */
  items?: { maxPieces: number; maxCount: number };
};

export type Scan = {
  pieces: number;
  /**
   * The one array among a top-level object's values, if it holds just one: its brackets' offsets,
   * each item's text as `[start, end)` offsets in turn, and the pieces within it. Items past
   * `maxCount + 1` are not recorded, so that a count over the bound can still be told.
   */
  array?: { open: number; close: number; spans: number[]; pieces: number };
};

export class TooComplex extends Error {
  constructor(
    readonly limit: number,
    /** The item whose own bound was passed. */
    readonly item?: number,
  ) {
    super(`more than ${limit} pieces (keys and values)`);
  }
}

const QUOTE = 34;
const BACKSLASH = 92;
const COMMA = 44;
const COLON = 58;
const OPEN_OBJECT = 123;
const OPEN_ARRAY = 91;
const CLOSE_OBJECT = 125;
const CLOSE_ARRAY = 93;

/** Throws TooComplex if `text` holds more than `maxPieces` pieces. */
export function boundPieces(text: string, maxPieces: number): void {
  // Each piece is a character: most texts are read no further than their length.
  if (text.length > maxPieces) scanJson(text, { maxPieces });
}

/** Counts the pieces of `text`, throwing TooComplex past a limit. Not a validator: JSON.parse still judges the text. */
export function scanJson(text: string, { maxPieces, items }: JsonLimits): Scan {
  let pieces = 0;
  let depth = 0;
  let topIsObject = false;
  let arrays = 0;
  let array: Required<Scan>["array"] | undefined;
  let inArray = false;
  let itemStart = 0;
  let itemPieces = 0;
  const endItem = (end: number) => {
    const index = array!.spans.length / 2;
    if (pieces - itemPieces > items!.maxPieces) throw new TooComplex(items!.maxPieces, index);
    if (index <= items!.maxCount) array!.spans.push(itemStart, end);
  };
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      i = stringEnd(text, i);
      continue;
    }
    if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      if (depth-- === 2 && inArray) {
        inArray = false;
        if (array!.spans.length > 0 || text.slice(itemStart, i).trim() !== "") endItem(i);
        array!.close = i;
        array!.pieces = pieces - array!.pieces;
      }
      continue;
    }
    if (c !== COMMA && c !== COLON && c !== OPEN_OBJECT && c !== OPEN_ARRAY) continue;
    if (c === COMMA && inArray && depth === 2) {
      endItem(i);
      itemStart = i + 1;
      itemPieces = pieces + 1;
    }
    if (++pieces > maxPieces) throw new TooComplex(maxPieces);
    if (c === COMMA || c === COLON) continue;
    if (++depth === 1) topIsObject = c === OPEN_OBJECT;
    if (items && depth === 2 && topIsObject && c === OPEN_ARRAY && ++arrays === 1) {
      array = { open: i, close: -1, spans: [], pieces: pieces - 1 };
      inArray = true;
      itemStart = i + 1;
      itemPieces = pieces;
    }
  }
  return { pieces, ...(arrays === 1 && array && array.close >= 0 && { array }) };
}

/** The offset of the quote that ends the string opened at `start` (or the text's end, unclosed). */
function stringEnd(text: string, start: number): number {
  for (let end = text.indexOf('"', start + 1); end >= 0; end = text.indexOf('"', end + 1)) {
    let slashes = 0;
    while (text.charCodeAt(end - 1 - slashes) === BACKSLASH) slashes++;
    if (slashes % 2 === 0) return end;
  }
  return text.length;
}
