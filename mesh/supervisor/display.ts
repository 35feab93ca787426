// What `mesh up` prints. On a terminal the status table stays at the bottom and is redrawn in place
// when something changes, with event lines scrolling above it; otherwise (a pipe, a log file, a
// test) everything is plain lines, each printed once.
export interface Display {
  event(line: string): void;
  table(lines: string[]): void;
}

function write(stream: NodeJS.WriteStream, text: string): void {
  try {
    stream.write(text);
  } catch {
    // stdout closed (e.g. `mesh up | head`): keep supervising, stop printing.
  }
}

export class PlainDisplay implements Display {
  private lastTable = "";
  constructor(private out: NodeJS.WriteStream = process.stdout) {}
  event(line: string): void {
    write(this.out, `${line}\n`);
  }
  /** Prints the table only when it differs from the last one printed. */
  table(lines: string[]): void {
    const text = lines.join("\n");
    if (text === this.lastTable) return;
    this.lastTable = text;
    write(this.out, `${text}\n`);
  }
}

export class LiveDisplay implements Display {
  private drawn: string[] = [];
  constructor(private out: NodeJS.WriteStream = process.stdout) {}

  private erase(): string {
    // Cursor to the start of the first table line, then clear to the end of the screen.
    return this.drawn.length ? `\x1b[${this.drawn.length}F\x1b[J` : "";
  }

  event(line: string): void {
    write(this.out, `${this.erase()}${line}\n${this.drawn.map((l) => `${l}\n`).join("")}`);
  }

  table(lines: string[]): void {
    if (lines.join("\n") === this.drawn.join("\n")) return;
    write(this.out, `${this.erase()}${lines.map((l) => `${l}\n`).join("")}`);
    this.drawn = lines;
  }
}

export function makeDisplay(out: NodeJS.WriteStream = process.stdout): Display {
  return out.isTTY && process.env.TERM !== "dumb" ? new LiveDisplay(out) : new PlainDisplay(out);
}
