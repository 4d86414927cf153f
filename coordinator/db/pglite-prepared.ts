// Named prepared statements for PGlite. `PGlite.query` parses and plans every statement afresh and
// crosses into WebAssembly six times to do it (parse, describe, bind, describe, execute, sync). The
// hot-path SQL is a fixed set of texts, so each is parsed once under a name, and an execution is
// one crossing: bind, describe, execute and sync in one buffer. Postgres replans a statement by
// itself after DDL or ANALYZE, and may settle on a generic plan that skips planning altogether.
import { type PGlite, parse, protocol } from "@electric-sql/pglite";
import { GENERIC_SETTINGS, type Queryable, type Transactional } from "./database.ts";

/** An unnamed statement with no parameters, parsed and run. */
const unnamed = (text: string) => [protocol.serialize.parse({ text }), protocol.serialize.bind({}), protocol.serialize.execute({})];

const SETTINGS = Object.entries(GENERIC_SETTINGS).map(([name, value]) => `${name} = ${value}`);
const SET_LOCAL = SETTINGS.map((setting) => `SET LOCAL ${setting};`).join(" ");
// What goes before and after each generic statement on the wire, serialized once.
const SET = Buffer.concat(SETTINGS.flatMap((setting) => unnamed(`SET ${setting}`)));
const RESET = Buffer.concat(Object.keys(GENERIC_SETTINGS).flatMap((name) => unnamed(`RESET ${name}`)));

/** Distinct texts kept prepared; past that, the oldest is closed (the set is fixed, so this is a guard). */
const MAX_STATEMENTS = 200;

type Statement = { name: string; paramTypes: number[] };

export class PreparedStatements {
  private readonly statements = new Map<string, Statement>();
  private named = 0;

  constructor(private readonly client: PGlite) {}

  /**
   * Queries run alone (each takes PGlite's transaction lock and syncs to disk, as `PGlite.query`
   * does), and transactions.
   */
  readonly queryable: Transactional = this.transactional(false);

  /**
   * The same under a generic plan: the one connection is set for it around each query, in the same
   * crossing, and for the length of each transaction.
   */
  readonly generic: Transactional = this.transactional(true);

  /** Queries inside a transaction, which already holds the transaction lock. */
  private readonly inTransaction: Queryable = { query: (text, params) => this.run(text, params, false) };

  private transactional(generic: boolean): Transactional {
    return {
      query: async <Row>(text: string, params?: unknown[]) => {
        const rows = await this.client._runExclusiveTransaction(() => this.run<Row>(text, params, generic));
        await this.client.syncToFs();
        return rows;
      },
      transaction: (fn) =>
        this.client.transaction(async (tx) => {
          if (generic) await tx.exec(SET_LOCAL);
          return fn(this.inTransaction);
        }),
    };
  }

  private run<Row>(text: string, params: unknown[] = [], generic: boolean): Promise<Row[]> {
    return this.client._runExclusiveQuery(async () => {
      const statement = this.statements.get(text) ?? (await this.prepare(text));
      const values = params.map((value, i) => this.serialize(value, statement.paramTypes[i]!));
      // The SETs, the statement and the RESETs share a transaction: were a SET refused, the statement
      // would not run, and should the statement fail, the SETs are undone with it.
      const message = Buffer.concat([
        ...(generic ? [SET] : []),
        protocol.serialize.bind({ statement: statement.name, values }),
        protocol.serialize.describe({ type: "P" }),
        protocol.serialize.execute({}),
        ...(generic ? [RESET] : []),
        protocol.serialize.sync(),
      ]);
      const messages = await this.client.execProtocolStream(message, { syncToFs: false });
      return parse.parseResults(messages, this.client.parsers)[generic ? SETTINGS.length : 0]!.rows as Row[];
    });
  }

  private async prepare(text: string): Promise<Statement> {
    const closing: Uint8Array[] = [];
    if (this.statements.size >= MAX_STATEMENTS) {
      const [oldest, { name }] = this.statements.entries().next().value!;
      this.statements.delete(oldest);
      closing.push(protocol.serialize.close({ type: "S", name }));
    }
    const name = `jobfleet_${++this.named}`;
    const message = Buffer.concat([
      ...closing,
      protocol.serialize.parse({ name, text }),
      protocol.serialize.describe({ type: "S", name }),
      protocol.serialize.sync(),
    ]);
    const paramTypes = parse.parseDescribeStatementResults(await this.client.execProtocolStream(message, { syncToFs: false }));
    const statement = { name, paramTypes };
    this.statements.set(text, statement);
    return statement;
  }

  private serialize(value: unknown, type: number): string | null {
    if (value === null || value === undefined) return null;
    const serializer = this.client.serializers[type];
    return serializer ? serializer(value) : String(value);
  }
}
