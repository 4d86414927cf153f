// API tokens: `jft_<id>_<secret>`. Only a SHA-256 of the secret is stored; a presented token is
// found by its id and its secret compared in constant time. Each token has one role.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { and, asc, eq, isNull } from "drizzle-orm";
import type { Role, TokenView } from "../../protocol/api.ts";
import { id as rowId } from "../../protocol/fields.ts";
import type { Database } from "../db/database.ts";
import { tokens } from "../db/schema.ts";

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

export async function tokenList(db: Database): Promise<TokenView[]> {
  const rows = await db.orm.select().from(tokens).where(isNull(tokens.revokedAt)).orderBy(asc(tokens.id));
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

type Cached = { row: typeof tokens.$inferSelect; until: number };

/**
 * Checks presented tokens; a found row is cached for `ttlMs`, so a revocation takes that long to
 * bite. An unknown id is not cached: a token made a moment ago works at once.
 */
export class TokenVerifier {
  private readonly cache = new Map<string, Cached>();

  constructor(
    private readonly db: Database,
    private readonly ttlMs = 5_000,
  ) {}

  async verify(token: string): Promise<Principal | undefined> {
    const match = FORMAT.exec(token);
    if (!match || !rowId.safeParse(match[1]).success) return undefined;
    const row = await this.row(match[1]!);
    if (!row || row.revokedAt) return undefined;
    const ok = timingSafeEqual(digest(match[2]!), Buffer.from(row.hash, "hex"));
    return ok ? { tokenId: row.id, name: row.name, role: row.role } : undefined;
  }

  private async row(id: string): Promise<Cached["row"] | undefined> {
    const cached = this.cache.get(id);
    if (cached && cached.until > Date.now()) return cached.row;
    const [row] = await this.db.orm.select().from(tokens).where(eq(tokens.id, id));
    if (!row) return undefined;
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(id, { row, until: Date.now() + this.ttlMs });
    return row;
  }
}
