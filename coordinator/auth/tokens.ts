// API tokens: `jft_<id>_<secret>`. Only a SHA-256 of the secret is stored; a presented token is
// found by its id and its secret compared in constant time. Each token has one role.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { and, asc, eq, gt, isNull } from "drizzle-orm";
import type { Role, TokenView } from "../../protocol/api.ts";
import { id as rowId } from "../../protocol/fields.ts";
import type { Database, Queryable } from "../db/database.ts";
import { tokens } from "../db/schema.ts";
import type { Charges, RateLimits } from "../rate/rate-limits.ts";

export type Principal = { tokenId: string; name: string; role: Role };

const FORMAT = /^jft_([1-9][0-9]{0,18})_([A-Za-z0-9_-]{43})$/;

const digest = (secret: string) => createHash("sha256").update(secret).digest();

function view(row: typeof tokens.$inferSelect): TokenView {
  return { id: row.id, name: row.name, role: row.role, createdAt: row.createdAt.toISOString() };
}

export async function tokenCreate(db: Database, name: string, role: Role): Promise<{ token: string; view: TokenView }> {
  const secret = randomBytes(32).toString("base64url");
  const [row] = await db.orm.insert(tokens).values({ name, role, hash: digest(secret).toString("hex") }).returning();
  return { token: `jft_${row!.id}_${secret}`, view: view(row!) };
}

/** Live tokens after `after`, oldest first, one more than `limit` (a page's read). */
export async function tokenList(db: Database, { limit, after }: { limit: number; after?: string }): Promise<TokenView[]> {
  const live = isNull(tokens.revokedAt);
  const rows = await db.orm
    .select()
    .from(tokens)
    .where(after === undefined ? live : and(live, gt(tokens.id, after)))
    .orderBy(asc(tokens.id))
    .limit(limit + 1);
  return rows.map(view);
}

/** Revokes a token; false when there is no live token with that id. */
export async function tokenRevoke(db: Database, id: string): Promise<boolean> {
  const rows = await db.orm
    .update(tokens)
    .set({ revokedAt: new Date() })
    .where(and(eq(tokens.id, id), isNull(tokens.revokedAt)))
    .returning({ id: tokens.id });
  return rows.length > 0;
}

/** Revokes every live token with this name (a restarted local agent replaces its own). */
export async function tokenRevokeNamed(db: Database, name: string): Promise<void> {
  await db.orm
    .update(tokens)
    .set({ revokedAt: new Date() })
    .where(and(eq(tokens.name, name), isNull(tokens.revokedAt)));
}

type Row = typeof tokens.$inferSelect;
type Cached = { row: Row; until: number };

/** Whether an admin token was ever made here, revoked since or not. */
export async function adminEverMade(db: Queryable): Promise<boolean> {
  return (await db.query(`SELECT 1 FROM tokens WHERE role = 'admin' LIMIT 1`)).length > 0;
}

/** Of these tokens, by id, those revoked since: one statement however many agents hold them. */
export async function tokensRevoked(db: Queryable, ids: string[]): Promise<Set<string>> {
  const rows = await db.query<{ id: string }>(`SELECT id::text AS id FROM tokens WHERE id = ANY($1::bigint[]) AND revoked_at IS NOT NULL`, [ids]);
  return new Set(rows.map((row) => row.id));
}

/** A client that has failed to authenticate too often: it may try again in `waitMs`. */
export class Throttled extends Error {
  constructor(
    readonly from: string,
    readonly waitMs: number,
  ) {
    super(`too many failed authentications from ${from}`);
    this.name = "Throttled";
  }
}

export type VerifierOptions = {
  /** How long a found row is trusted (default 5 s). */
  ttlMs?: number;
  /** Failed authentications per client address. */
  failures?: RateLimits;
};

/**
 * Checks presented tokens; a found row is cached for `ttlMs`, so a revocation takes that long to
 * bite, and is read again in the background once past half that. An unknown id is not cached: a
 * token made a moment ago works at once. Requests presenting one id while it is read share the read.
 */
export class TokenVerifier {
  private readonly cache = new Map<string, Cached>();
  private readonly reading = new Map<string, Promise<Row | undefined>>();
  private readonly ttlMs: number;
  private readonly failures?: RateLimits;

  constructor(
    private readonly db: Database,
    { ttlMs = 5_000, failures }: VerifierOptions = {},
  ) {
    this.ttlMs = ttlMs;
    this.failures = failures;
  }

  /**
   * The principal of a valid token, else undefined. `from`, the client's address, is charged for
   * each failure, and once it has failed too often it is refused (`Throttled`) before its token is
   * looked at. A database read is charged before it is made and refunded if the token proves
   * good, so that guesses sent at once cannot outrun the limit.
   */
  async verify(token: string, from?: string): Promise<Principal | undefined> {
    const failures = from === undefined ? undefined : this.failures?.for(from);
    const wait = failures?.wait() ?? 0;
    if (wait > 0) throw new Throttled(from!, wait);
    const match = FORMAT.exec(token);
    if (!match || !rowId.safeParse(match[1]).success) return void failures?.take();
    const { row, charged } = await this.row(match[1]!, failures);
    const ok = row !== undefined && !row.revokedAt && timingSafeEqual(digest(match[2]!), Buffer.from(row.hash, "hex"));
    if (ok && charged) failures?.refund();
    if (!ok && !charged) failures?.take();
    return ok ? { tokenId: row.id, name: row.name, role: row.role } : undefined;
  }

  /** The token's row; `charged`: this call started a read, and charged `failures` for it. */
  private async row(id: string, failures?: Charges): Promise<{ row: Row | undefined; charged: boolean }> {
    const cached = this.cache.get(id);
    const now = Date.now();
    if (cached && cached.until > now) {
      // Read again once past half its age, meanwhile, so that a busy token's requests never wait for it.
      if (cached.until - now < this.ttlMs / 2) void this.reread(id);
      return { row: cached.row, charged: false };
    }
    const shared = this.reading.get(id);
    if (shared) return { row: await shared, charged: false };
    failures?.take();
    try {
      return { row: await this.reread(id), charged: true };
    } catch (error) {
      failures?.refund();
      throw error;
    }
  }

  /** The read of the token's row under way, or a new one. */
  private reread(id: string): Promise<Row | undefined> {
    let read = this.reading.get(id);
    if (!read) {
      read = this.read(id).finally(() => this.reading.delete(id));
      // One nobody waits for fails quietly: the entry runs out, and the read after it says why.
      read.catch(() => {});
      this.reading.set(id, read);
    }
    return read;
  }

  private async read(id: string): Promise<Row | undefined> {
    const [row] = await this.db.orm.select().from(tokens).where(eq(tokens.id, id));
    if (!row) return undefined;
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(id, { row, until: Date.now() + this.ttlMs });
    return row;
  }
}
