// `jobfleet work-orders …`, `jobfleet jobs …` and `jobfleet agents list`: read and cancel.
import type { AgentView, JobView, TokenView, WorkOrderView } from "../../protocol/api.ts";
import { id as rowId } from "../../protocol/fields.ts";
import { jobMachine } from "../../protocol/states.ts";
import { Client } from "../client.ts";
import { CliError } from "../errors.ts";
import { age, table } from "../format.ts";
import { endpoint, type Flags } from "../settings.ts";
import { follow } from "./work.ts";

type Page<T> = { items: T[]; next: string | null };

function client(flags: Flags): Client {
  const { url, token } = endpoint(flags);
  return new Client(url, token);
}

function print(flags: Flags, value: unknown, human: () => string): number {
  process.stdout.write(flags.json ? `${JSON.stringify(value, null, 2)}\n` : human());
  return 0;
}

/** A list page, and on stderr, where there is more, the flag that reads on. */
function printPage<T>(flags: Flags, page: Page<T>, cursor: "before" | "after", human: () => string): number {
  print(flags, page, human);
  if (page.next !== null && !flags.json) process.stderr.write(`more: --${cursor} ${page.next}\n`);
  return 0;
}

function noArguments(args: string[], what: string): void {
  if (args.length > 0) throw CliError.usage(`${what} takes no argument, not '${args[0]}'`);
}

function idArgument(args: string[], what: string): string {
  const [id, extra] = args;
  if (!id || extra !== undefined) throw CliError.usage(`give one ${what} id`);
  if (!rowId.safeParse(id).success) throw CliError.usage(`'${id}' is not a ${what} id`);
  return id;
}

function queryString(flags: Flags, names: string[]): string {
  const params = new URLSearchParams();
  for (const name of names) if (typeof flags[name] === "string") params.set(name, flags[name] as string);
  const text = params.toString();
  return text ? `?${text}` : "";
}

const workOrderRow = (w: WorkOrderView) => [
  w.id,
  w.state,
  w.adapter,
  w.selector || "-",
  w.latestJob?.agent ?? w.agent ?? "-",
  String(w.attempts),
  w.latestJob?.exitCode?.toString() ?? "-",
  age(w.createdAt),
];

const jobRow = (j: JobView) => [j.id, j.workOrderId, String(j.attempt), j.state, j.agent, j.exitCode?.toString() ?? "-", age(j.createdAt)];

async function logs(flags: Flags, c: Client, path: string, subject: string): Promise<number> {
  if (flags.follow) return follow(c, `${path}?follow=true`, subject);
  for await (const chunk of c.text(path)) process.stdout.write(chunk);
  return 0;
}

export async function workOrders(action: string, flags: Flags, args: string[]): Promise<number> {
  const c = client(flags);
  switch (action) {
    case "list": {
      noArguments(args, "work-orders list");
      const page = await c.request<Page<WorkOrderView>>("GET", `/v1/work-orders${queryString(flags, ["state", "labels", "selector", "agent", "limit", "before"])}`);
      return printPage(flags, page, "before", () =>
        table(["ID", "STATE", "ADAPTER", "SELECTOR", "AGENT", "ATTEMPTS", "EXIT", "AGE"], page.items.map(workOrderRow)),
      );
    }
    case "show": {
      const order = await c.request<WorkOrderView & { events: { at: string; to: string; from: string | null; reason: string | null }[] }>(
        "GET",
        `/v1/work-orders/${idArgument(args, "work order")}`,
      );
      return print(flags, order, () =>
        table(["ID", "STATE", "ADAPTER", "SELECTOR", "AGENT", "ATTEMPTS", "EXIT", "AGE"], [workOrderRow(order)]) +
          "\n" +
          table(["AT", "FROM", "TO", "REASON"], order.events.map((e) => [e.at, e.from ?? "-", e.to, e.reason ?? ""])),
      );
    }
    case "logs": {
      const id = idArgument(args, "work order");
      return logs(flags, c, `/v1/work-orders/${id}/log`, `work order ${id}`);
    }
    case "cancel": {
      const order = await c.request<WorkOrderView>("POST", `/v1/work-orders/${idArgument(args, "work order")}/cancel`, {});
      return print(flags, order, () => `work order ${order.id}: ${order.state === "cancelled" ? "cancelled" : "cancel requested"}\n`);
    }
  }
  throw CliError.usage(`unknown action 'work-orders ${action}'`);
}

export async function jobs(action: string, flags: Flags, args: string[]): Promise<number> {
  const c = client(flags);
  switch (action) {
    case "list": {
      noArguments(args, "jobs list");
      const page = await c.request<Page<JobView>>("GET", `/v1/jobs${queryString(flags, ["work-order", "agent", "state", "limit", "before"]).replace("work-order=", "workOrder=")}`);
      return printPage(flags, page, "before", () => table(["ID", "WORK ORDER", "ATTEMPT", "STATE", "AGENT", "EXIT", "AGE"], page.items.map(jobRow)));
    }
    case "show": {
      const job = await c.request<JobView>("GET", `/v1/jobs/${idArgument(args, "job")}`);
      return print(flags, job, () => table(["ID", "WORK ORDER", "ATTEMPT", "STATE", "AGENT", "EXIT", "AGE"], [jobRow(job)]));
    }
    case "logs": {
      const job = await c.request<JobView>("GET", `/v1/jobs/${idArgument(args, "job")}`);
      return logs(flags, c, `/v1/jobs/${job.id}/log`, `job ${job.id}`);
    }
    case "cancel": {
      const job = await c.request<JobView>("GET", `/v1/jobs/${idArgument(args, "job")}`);
      if (jobMachine.isTerminal(job.state)) throw new CliError(`job ${job.id} has already ended (${job.state})`);
      return workOrders("cancel", flags, [job.workOrderId]);
    }
  }
  throw CliError.usage(`unknown action 'jobs ${action}'`);
}

export async function agents(action: string, flags: Flags): Promise<number> {
  if (action !== "list") throw CliError.usage(`unknown action 'agents ${action}'`);
  const page = await client(flags).request<Page<AgentView>>("GET", `/v1/agents${queryString(flags, ["connected", "labels", "limit", "after"])}`);
  return printPage(flags, page, "after", () =>
    table(
      ["NAME", "CONNECTED", "MODE", "CAPACITY", "PREFETCH", "LABELS", "LAST SEEN"],
      page.items.map((a) => [
        a.name,
        a.connected ? "yes" : "no",
        a.mode,
        String(a.capacity),
        String(a.prefetch),
        Object.entries(a.labels).map(([k, v]) => (v ? `${k}=${v}` : k)).join(","),
        age(a.lastSeenAt),
      ]),
    ),
  );
}

export async function tokens(action: string, flags: Flags, args: string[]): Promise<number> {
  const c = client(flags);
  switch (action) {
    case "create": {
      const role = flags.role;
      const name = flags.name;
      if (typeof role !== "string" || typeof name !== "string") throw CliError.usage("tokens create needs --name and --role");
      const created = await c.request<TokenView & { token: string }>("POST", "/v1/tokens", { name, role });
      return print(flags, created, () => `${created.token}\n`);
    }
    case "list": {
      noArguments(args, "tokens list");
      const page = await c.request<Page<TokenView>>("GET", `/v1/tokens${queryString(flags, ["limit", "after"])}`);
      return printPage(flags, page, "after", () => table(["ID", "NAME", "ROLE", "AGE"], page.items.map((t) => [t.id, t.name, t.role, age(t.createdAt)])));
    }
    case "revoke": {
      const id = idArgument(args, "token");
      await c.request("DELETE", `/v1/tokens/${id}`);
      return print(flags, { id, revoked: true }, () => "revoked\n");
    }
  }
  throw CliError.usage(`unknown action 'tokens ${action}'`);
}
