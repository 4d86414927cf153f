// What JSON text will cost JSON.parse, read before it is parsed. The cost follows what the text
// builds, not its bytes: on this project's machines 1 MiB of `[{},{},…]` builds 350,000 objects in
// about 180 ms, 1 MiB of long strings in 2 ms, and the event loop stands still meanwhile. Bodies and
// messages are bounded in pieces (each `{`, `[`, `,` and `:` outside a string: about one a key or
// value), so that what one client sends holds up every other for a few ms at most. The text may be
// fed a chunk at a time as it arrives, so that reading a large body holds up nothing either.

export type JsonLimits = {
  maxPieces: number;
  /** For the items of the one array that a top-level object holds (see `Scan.array`). */
  items?: { maxPieces: number; maxChars: number; maxCount: number };
};

export type Scan = {
  pieces: number;
  /**
   * The one array among a top-level object's values, if it holds just one: its brackets' offsets,
   * each item's text as `[start, end)` offsets and its pieces, three numbers an item in turn, and
   * the pieces within the array. Items past `maxCount + 1` are not recorded, so that a count over
   * the bound can still be told.
   */
  array?: { open: number; close: number; spans: number[]; pieces: number };
};

export class TooComplex extends Error {
  constructor(
    readonly limit: number,
    /** The item whose own bound was passed. */
    readonly item?: number,
    what = `more than ${limit} pieces (keys and values)`,
  ) {
    super(what);
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
export function scanJson(text: string, limits: JsonLimits): Scan {
  const scanner = new JsonScanner(limits);
  scanner.feed(text);
  return scanner.end();
}

/** `scanJson` a chunk at a time: `feed` each in turn, then `end`. */
export class JsonScanner {
  private offset = 0;
  private pieces = 0;
  private depth = 0;
  private topIsObject = false;
  private arrays = 0;
  private array?: Required<Scan>["array"];
  private inArray = false;
  /** No item has begun in the array yet: only JSON's whitespace since its `[`. */
  private blank = false;
  private items = 0;
  private itemStart = 0;
  private itemPieces = 0;
  /** Inside a string at the end of the last chunk, after this many backslashes in a row. */
  private inString = false;
  private slashes = 0;

  constructor(private readonly limits: JsonLimits) {}

  feed(chunk: string): void {
    let i = 0;
    if (this.inString) i = this.afterString(chunk, 0, this.slashes);
    for (; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (this.blank && c !== 32 && c !== 10 && c !== 13 && c !== 9 && c !== CLOSE_ARRAY && c !== CLOSE_OBJECT) this.blank = false;
      if (c === QUOTE) i = this.afterString(chunk, i + 1, 0) - 1;
      else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) this.close(this.offset + i);
      else if (c === COMMA || c === COLON || c === OPEN_OBJECT || c === OPEN_ARRAY) this.piece(c, this.offset + i);
    }
    this.offset += chunk.length;
  }

  end(): Scan {
    const { pieces, array, arrays } = this;
    return { pieces, ...(arrays === 1 && array && array.close >= 0 && { array }) };
  }

  private piece(c: number, at: number): void {
    const { maxPieces, items } = this.limits;
    if (c === COMMA && this.inArray && this.depth === 2) {
      this.endItem(at);
      this.itemStart = at + 1;
      this.itemPieces = this.pieces + 1;
    }
    if (++this.pieces > maxPieces) throw new TooComplex(maxPieces);
    if (this.inArray && this.pieces - this.itemPieces > items!.maxPieces) throw new TooComplex(items!.maxPieces, this.items);
    if (c === COMMA || c === COLON) return;
    if (++this.depth === 1) this.topIsObject = c === OPEN_OBJECT;
    if (items && this.depth === 2 && this.topIsObject && c === OPEN_ARRAY && ++this.arrays === 1) {
      this.array = { open: at, close: -1, spans: [], pieces: this.pieces - 1 };
      this.inArray = this.blank = true;
      this.itemStart = at + 1;
      this.itemPieces = this.pieces;
    }
  }

  private close(at: number): void {
    if (this.depth-- !== 2 || !this.inArray) return;
    this.inArray = false;
    if (!this.blank || this.items > 0) this.endItem(at);
    this.blank = false;
    this.array!.close = at;
    this.array!.pieces = this.pieces - this.array!.pieces;
  }

  private endItem(end: number): void {
    const { maxChars, maxCount } = this.limits.items!;
    const index = this.items++;
    if (end - this.itemStart > maxChars) throw new TooComplex(maxChars, index, `more than ${maxChars} characters`);
    if (index <= maxCount) this.array!.spans.push(this.itemStart, end, this.pieces - this.itemPieces);
  }

  /**
   * Where the string that goes on at `from` ends in `chunk`: past its closing quote, or the chunk's
   * length if it goes on into the next, `slashes` the backslashes in a row just before `from`.
   */
  private afterString(chunk: string, from: number, slashes: number): number {
    for (let quote = chunk.indexOf('"', from); quote >= 0; quote = chunk.indexOf('"', quote + 1)) {
      if (this.escapes(chunk, from, quote, slashes) % 2 === 0) {
        this.inString = false;
        return quote + 1;
      }
    }
    this.inString = true;
    this.slashes = this.escapes(chunk, from, chunk.length, slashes);
    return chunk.length;
  }

  /** The backslashes in a row before `at`, back to `from` and then the `slashes` before it. */
  private escapes(chunk: string, from: number, at: number, slashes: number): number {
    let n = 0;
    while (at - n > from && chunk.charCodeAt(at - 1 - n) === BACKSLASH) n++;
    return at - n === from ? n + slashes : n;
  }
}
