// The one table the bench prints: scenario, figure, unit, and the ratio to a peer that did the same
// work in the same run. Figures are printed, never asserted.
import { availableParallelism } from "node:os";

export type Row = {
  scenario: string;
  figure: number;
  unit: string;
  /** e.g. "1.85× graphile (defaults)" */
  ratio?: string;
};

export class Table {
  readonly rows: Row[] = [];
  readonly notes: string[] = [];

  add(row: Row): void {
    this.rows.push(row);
    // Shown as it comes, so a long run is not silent.
    process.stderr.write(`  ${row.scenario}: ${format(row.figure)} ${row.unit}${row.ratio ? ` (${row.ratio})` : ""}\n`);
  }

  note(text: string): void {
    this.notes.push(text);
  }

  render(mode: string): string {
    const header = ["scenario", "figure", "unit", "ratio"];
    const body = this.rows.map((r) => [r.scenario, format(r.figure), r.unit, r.ratio ?? ""]);
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === 1 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
    return [
      `jobfleet bench (${mode}) — ${new Date().toISOString().slice(0, 10)}, ${availableParallelism()} cores, Node ${process.versions.node}`,
      "",
      line(header),
      line(widths.map((w) => "-".repeat(w))),
      ...body.map(line),
      ...(this.notes.length ? ["", ...this.notes.map((n) => `- ${n}`)] : []),
    ].join("\n");
  }
}

export function format(n: number): string {
  if (!Number.isFinite(n)) return "n/a";
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString("en-US");
  if (Math.abs(n) >= 10) return n.toFixed(1);
  // Three significant figures: 0.0073 commits a job beside a ratio worked out from it, not 0.01.
  return n === 0 ? "0.00" : n.toPrecision(3);
}

/** "1.85× <peer>": how many times the peer's figure ours is. */
export function ratio(ours: number, theirs: number, peer: string): string {
  return `${(ours / theirs).toFixed(2)}× ${peer}`;
}
