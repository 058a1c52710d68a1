'use strict';
// picostim's emulated-silicon engine, device side: the official MicroPython image in rp2040js (npm), driven in
// lock-step by the Python board (host/picostim/sim/emu/engine.py) over stdin/stdout, one JSON object per line.
//
// Python -> here: {"k":"run","until":ns,"drives":[[gpio,level|null,t_ns],...]}   run emulated time up to `until`
//                 {"k":"adcv","v":raw12}                       the value of the conversion we asked for
//                 {"k":"in","b":base64}                        bytes from the host into the USB CDC
//                 {"k":"reset","cause":"wdt"|"pwron"}  {"k":"power","on":bool}  {"k":"hang"}
//                 {"k":"cut_write","seed":n}                   cut power at a random byte of the next flash write
// here -> Python: {"k":"done","t":ns,"e":[[t,gpio,level],...],"d":[[t,gpio,duty,hi_ns,period_ns],...]}
//                 {"k":"adc","t":ns,"ch":n,"e":[...],"d":[...]} a conversion started at t: its value, please
//                 {"k":"out","b":base64}  {"k":"usb","up":bool}  {"k":"reset","cause":...,"t":ns}
//                 {"k":"note","msg":...}  {"k":"ready"}
//
// rp2040js 1.4.1 gaps are handled here, at run time, without touching its files (see ../DESIGN.md "emu"):
// flash erase/program (ROM calls intercepted), watchdog/chip reset (a new MCU keeping flash), PWM-wrap DREQ credit,
// PWM EN read-back, flash unique id, UART TX interrupt storm, ADC round-robin channel mask.

const fs = require('fs');
const { RP2040, USBCDC, GPIOPinState } = require('rp2040js');

const cfg = JSON.parse(process.argv[2]);
const FLASH_BASE = 0x10000000;
const FLASH_SIZE = 2 * 1024 * 1024;      // RPI_PICO: W25Q16JV, 2 MB
const TREQ_PWM0 = 24;

// Flash timing (W25Q16JV datasheet, typical): the CPU is held in the ROM call meanwhile, as on the chip.
const ERASE_4K_NS = 45e6;
const PROGRAM_PAGE_NS = 0.4e6;

// ------------------------------------------------------------------------------------------------- I/O plumbing
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
console.log = console.info = console.warn = console.debug = (...a) => process.stderr.write(a.join(' ') + '\n');
const quietLogger = { debug() {}, info() {}, warn() {}, error(c, m) { process.stderr.write(`${c}: ${m}\n`); } };

const bootrom = new Uint32Array(fs.readFileSync(cfg.bootrom).buffer.slice(0));
const flash = new Uint8Array(16 * 1024 * 1024).fill(0xff);
loadUF2(fs.readFileSync(cfg.uf2), flash);
const uid = Buffer.from(cfg.uid, 'hex');
const dutyPins = new Set(cfg.duty_pins || []);
const clkNsPerCycle = () => 1e9 / mcu.clkSys;

function loadUF2(buf, into) {
  let blocks = 0;
  for (let off = 0; off + 512 <= buf.length; off += 512) {
    if (buf.readUInt32LE(off) !== 0x0a324655 || buf.readUInt32LE(off + 4) !== 0x9e5d5157) continue;
    const flags = buf.readUInt32LE(off + 8);
    if (flags & 1) continue;                               // "not main flash"
    const addr = buf.readUInt32LE(off + 12), size = buf.readUInt32LE(off + 16);
    if (addr < FLASH_BASE || addr + size > FLASH_BASE + into.length || size > 476) continue;
    into.set(buf.subarray(off + 32, off + 32 + size), addr - FLASH_BASE);
    blocks++;
  }
  if (!blocks) throw new Error('no RP2040 flash blocks in the UF2 image');
}

// ------------------------------------------------------------------------------------------------- the chip
let mcu = null, cdc = null, clock = null;
let poweredOn = false, hung = false, usbUp = false, resetReason = 0;
let edges = [], duties = [];
let hostIn = [];                    // bytes from the host not yet taken by the CDC FIFO
let adcPending = null;              // conversion waiting for its value from Python
let cutArmed = null;                // pseudo-random generator when a power cut at a flash write is armed
const ext = new Array(30).fill(null);      // external drive per pin: 0, 1, or null (the pad's pull decides)
const duty = [];                    // per duty pin: {rise, fall, period, hi, emitted, lastEdge, level}
let timeBase = 0;                   // emulated ns at the current MCU's power-on (the clock restarts per MCU)

function romFunc(code) {
  const table = bootrom[0x14 >> 2] & 0xffff;         // 16-bit pointer to the function table at 0x14
  const rd16 = (a) => (bootrom[a >> 2] >>> ((a & 2) * 8)) & 0xffff;
  for (let a = table; ; a += 4) {
    const c = rd16(a);
    if (!c) return null;
    if (c === code) return rd16(a + 2);
  }
}
const rt = (a, b) => a.charCodeAt(0) | (b.charCodeAt(0) << 8);
const ROM = { erase: romFunc(rt('R', 'E')), program: romFunc(rt('R', 'P')), usbboot: romFunc(rt('U', 'B')) };
const BK = { erase: 0x51, program: 0x52, usbboot: 0x53 };
const patchedRom = new Uint32Array(bootrom);
for (const [name, bk] of Object.entries(BK)) {        // a BKPT at each intercepted ROM entry (thumb bit cleared)
  const a = ROM[name] & ~1, w = a >> 2, sh = (a & 2) * 8;
  patchedRom[w] = (patchedRom[w] & ~(0xffff << sh)) | ((0xbe00 | bk) << sh);
}

function nowNs() { return timeBase + clock.nanos; }

function newMcu(reason) {
  // A chip reset: a fresh RP2040 (every register at its reset value), the same flash chip.
  if (mcu) timeBase += mcu.clock.nanos;
  mcu = new RP2040();
  clock = mcu.clock;
  mcu.logger = quietLogger;
  mcu.loadBootrom(patchedRom);
  mcu.flash = flash;
  mcu.flash16 = new Uint16Array(flash.buffer);
  mcu.flashView = new DataView(flash.buffer);
  resetReason = reason;
  patchWatchdog();
  patchPwm();
  patchDma();
  patchAdc();
  patchUart();
  patchQspi();
  mcu.onBreak = onBreak;
  for (let g = 0; g < 30; g++) {
    const pin = mcu.gpio[g];
    pin.addListener(() => pinChanged(g));
    applyInput(g);
  }
  usbUp = false;
  cdc = new USBCDC(mcu.usbCtrl);
  cdc.onDeviceConnected = () => { usbUp = true; out({ k: 'usb', up: true, t: nowNs() }); };
  cdc.onSerialData = (buf) => out({ k: 'out', b: Buffer.from(buf).toString('base64') });
  // The host answers the device's OUT transfer only when it has bytes (rp2040js's CDC answers at once with zero
  // bytes, so an idle REPL re-arms its endpoint forever and the CPU never sleeps).
  pendingOut = 0;
  cdc.usb.onEndpointRead = (endpoint, size) => {
    if (endpoint !== cdc.outEndpoint) return;
    pendingOut = size;
    feedHost();
  };
  mcu.core.PC = FLASH_BASE;      // boot2 at the start of flash, as the bootrom would after its checks
  hung = false;
  for (const g of dutyPins) duty[g] = { rise: null, fall: null, period: 0, hi: 0, emitted: null, lastEdge: nowNs(), level: 0 };
}

function padLevel(g) {
  const pin = mcu.gpio[g];
  if (pin.outputEnable) return pin.outputValue ? 1 : 0;
  if (ext[g] !== null) return ext[g];
  return pin.pullupEnabled ? 1 : 0;
}

function applyInput(g) {
  const lvl = padLevel(g);
  if (mcu.gpio[g].rawInputValue !== !!lvl) mcu.gpio[g].setInputValue(!!lvl);
}

const lastLevel = new Array(30).fill(-1);
function pinChanged(g) {
  applyInput(g);                 // an output reads back on its own input (GPIO_IN, pin IRQs), as on the chip
  recordLevel(g);
}

function recordLevel(g) {
  const lvl = poweredOn ? padLevel(g) : 0;
  if (lvl === lastLevel[g]) return;
  lastLevel[g] = lvl;
  const t = nowNs();
  if (dutyPins.has(g)) { dutyEdge(g, lvl, t); return; }
  edges.push([t, g, lvl]);
}

function dutyEdge(g, lvl, t) {
  // ISET/LED pins run at up to 100 kHz: report the duty of each period (from the pin's own edges) when it changes.
  const d = duty[g];
  d.lastEdge = t;
  d.level = lvl;
  if (lvl) {
    if (d.rise !== null && d.fall !== null && d.fall > d.rise) {
      const period = t - d.rise, hi = d.fall - d.rise;
      if (d.emitted === null || Math.abs(d.emitted.period - period) > 1 || Math.abs(d.emitted.hi - hi) > 1) {
        d.emitted = { period, hi };
        duties.push([d.rise, g, hi / period, hi, period]);
      }
      d.period = period;
    }
    d.rise = t;
  } else {
    d.fall = t;
  }
}

function dutyIdleCheck() {
  // A duty pin that stopped toggling: constant level from its last edge on.
  const t = nowNs();
  for (const g of dutyPins) {
    const d = duty[g];
    const level = poweredOn ? padLevel(g) : 0;
    const quiet = d.period ? 3 * d.period : 100e3;
    if (t - d.lastEdge < quiet) continue;
    const want = { period: 0, hi: level };
    if (d.emitted && d.emitted.period === 0 && d.emitted.hi === level) continue;
    d.emitted = want;
    d.rise = d.fall = null;
    d.period = 0;
    duties.push([d.lastEdge, g, level, 0, 0]);
  }
}

// ---- flash: the ROM's erase/program entries run here (rp2040js's SSI does not program its flash array)
function onBreak(code) {
  const core = mcu.core;
  const r = core.registers;
  if (code === BK.erase || code === BK.program) {
    const off = r[0] >>> 0;
    const count = r[code === BK.erase ? 1 : 2] >>> 0;
    let n = count;
    if (cutArmed) n = Math.floor(cutArmed() * (count + 1));
    if (code === BK.erase) {
      flash.fill(0xff, off, Math.min(off + n, flash.length));
      clock.tick(ERASE_4K_NS * Math.ceil(count / 4096));
    } else {
      const src = r[1] >>> 0;
      for (let i = 0; i < n; i++) flash[off + i] &= mcu.readUint8(src + i);   // NOR: program clears bits only
      clock.tick(PROGRAM_PAGE_NS * Math.ceil(count / 256));
    }
    if (cutArmed) { cutArmed = null; powerOff(); return; }
    core.PC = core.LR & ~1;
    return;
  }
  if (code === BK.usbboot) {
    out({ k: 'bootloader', t: nowNs() });
    powerOff();
    return;
  }
  out({ k: 'note', msg: `breakpoint ${code} at 0x${((core.PC - 2) >>> 0).toString(16)}` });
  hung = true;       // a firmware BKPT (HardFault-like): the CPU stops, the watchdog can still reset it
}

// ---- QSPI chip select + SSI data register: enough of the flash's SPI command set for the unique-id read (0x4B)
function patchQspi() {
  const ssi = mcu.peripherals[0x18000];
  let idx = 0, cmd = 0;
  const rx = [];
  const DR0 = 0x60;
  const origW = ssi.writeUint32.bind(ssi), origR = ssi.readUint32.bind(ssi);
  ssi.writeUint32 = (offset, value) => {
    if (offset === DR0) {
      const b = value & 0xff;
      if (idx === 0) cmd = b;
      let resp = 0;
      if (cmd === 0x4b && idx >= 5 && idx < 13) resp = uid[idx - 5];
      rx.push(resp);
      idx++;
    }
    origW(offset, value);
  };
  const TXFLR = 0x20, RXFLR = 0x24;
  ssi.readUint32 = (offset) => {
    if (offset === DR0) return rx.length ? rx.shift() : 0;
    if (offset === TXFLR) return 0;                 // each byte goes out at once...
    if (offset === RXFLR) return Math.min(rx.length, 16);   // ...and its answer waits in the RX FIFO
    return origR(offset);
  };
  const qspi = mcu.peripherals[0x40018];
  const regs = new Uint32Array(0x30 >> 2);
  // STATUS registers (offsets 8n) read all-ones as rp2040js's placeholder did; CTRL reads back
  qspi.readUint32 = (offset) => (offset < 0x30 && offset & 4 ? regs[offset >> 2] : 0xffffffff);
  qspi.writeUint32 = (offset, value) => {
    if (offset >= 0x30) return;
    if (offset === 0x0c) {       // GPIO_QSPI_SS_CTRL: OUTOVER 2 = CS low = a new command starts
      const was = (regs[3] >> 8) & 3, now = (value >> 8) & 3;
      if (now === 2 && was !== 2) { idx = 0; rx.length = 0; }
    }
    regs[offset >> 2] = value;
  };
}

// ---- watchdog: expiry or TRIGGER resets the chip (rp2040js only logs); REASON survives, like SCRATCH0-7
function patchWatchdog() {
  const wd = mcu.peripherals[0x40058];
  if (resetReason) wd.reason = resetReason;
  if (savedScratch) wd.scratchData.set(savedScratch);
  wd.onWatchdogTrigger = () => {
    // rp2040js re-arms the expired alarm at the same instant (an endless loop): stop it; the chip resets next
    wd.alarm.enable = false;
    wd.timer.enable = false;
    pendingReset = { reason: wd.reason || 1 };
  };
}
let savedScratch = null, pendingReset = null;

function doChipReset(reason, cause) {
  savedScratch = new Uint32Array(mcu.peripherals[0x40058].scratchData);
  const t = nowNs();
  newMcu(reason);
  for (let g = 0; g < 30; g++) recordLevel(g);
  out({ k: 'reset', cause, t });
}

// ---- PWM: what a stopped slice does (RP2040 datasheet 4.5; pico-sdk pwm_set_wrap/pwm_set_chan_level: "if the
// PWM is not running, the write is latched in immediately"), and EN (0xA0) reads back the CSR.EN bits (rp2040js has
// a setter only). rp2040js instead (1) starts a stopped slice's counter when DIV is written (its prescaler setter
// re-enables the timer), so wraps, DREQs and double-buffer latches happen while the slice is meant to be stopped:
// the firmware's two DMA chains (CC and TOP) then get different numbers of wrap DREQs and run a period apart (low-rate
// gating gave pairs at the pair period); (2) latches CC/TOP of a stopped slice only when it is enabled; (3) sets the
// outputs only at a wrap or a compare match, so a slice enabled with a pair in CC began with its -phase alone.
function patchPwm() {
  const proto = Object.getPrototypeOf(mcu.pwm.channels[0]);
  if (proto.__picostim) return;
  const CSR = 0x00, DIV = 0x04, CC = 0x0c, TOP = 0x10, CSR_EN = 1, CSR_PH_CORRECT = 2;
  const desc = Object.getOwnPropertyDescriptor(proto, 'en');
  // The outputs of a free-running slice follow counter < CC at every instant (set again on start/stop/latch/INV).
  const refresh = function (ch) {
    if (ch.csr & CSR_PH_CORRECT) return;
    const c = ch.timer.counter;
    ch.setA(c < ch.alarmA.target);
    ch.setB(c < ch.alarmB.target);
  };
  Object.defineProperty(proto, 'en', {
    get() { return this.csr & CSR_EN ? 1 : 0; },
    set(v) { const was = this.csr & CSR_EN; desc.set.call(this, v); if (!!v !== !!was) refresh(this); },
    configurable: true,
  });
  const origWrite = proto.writeRegister;
  proto.writeRegister = function (offset, value) {
    origWrite.call(this, offset, value);
    if (offset === DIV) this.updateEnable();                  // (1) a stopped slice stays stopped
    else if ((offset === CC || offset === TOP) && !(this.csr & CSR_EN)) { this.updateDoubleBuffered(); refresh(this); }  // (2)
    else if (offset === CSR) refresh(this);                   // (3) EN, A_INV/B_INV take effect at once
  };
  proto.__picostim = true;
}

// ---- DMA: one transfer per PWM wrap per channel (rp2040js sets the wrap DREQ and never clears it)
function patchDma() {
  const dma = mcu.dma;
  const chProto = Object.getPrototypeOf(dma.channels[0]);
  if (!chProto.__picostim) {
    const origSchedule = chProto.scheduleTransfer, origStart = chProto.start, origAbort = chProto.abort;
    chProto.scheduleTransfer = function () {
      const tq = this.treqValue;
      if (tq >= TREQ_PWM0 && tq < TREQ_PWM0 + 8) {
        if (this.credit > 0 && !this.transferAlarm.scheduled) { this.credit--; this.transferAlarm.schedule(0); }
        return;
      }
      origSchedule.call(this);
    };
    chProto.start = function () { if (!(this.ctrl & (1 << 24))) this.credit = 0; origStart.call(this); };
    chProto.abort = function () { this.credit = 0; origAbort.call(this); };
    const dmaProto = Object.getPrototypeOf(dma);
    const origSet = dmaProto.setDREQ;
    dmaProto.setDREQ = function (dreq) {
      if (dreq >= TREQ_PWM0 && dreq < TREQ_PWM0 + 8) {
        for (const ch of this.channels) {
          if (ch.treqValue === dreq && ch.active) {
            ch.credit = Math.min((ch.credit || 0) + 1, 63);
            if (!ch.transferAlarm.scheduled) ch.scheduleTransfer();
          }
        }
        return;
      }
      origSet.call(this, dreq);
    };
    chProto.__picostim = true;
  }
  for (const ch of dma.channels) {
    ch.credit = 0;
    // rp2040js's clock leaves `scheduled` set after an alarm fires; ours clears it, so "a transfer is on its way"
    // can be told from "waiting for the next DREQ"
    const alarm = clock.createAlarm(() => { alarm.scheduled = false; ch.transfer(); });
    ch.transferAlarm = alarm;
  }
}

// ---- ADC: each conversion's value comes from the board's analog front end at the conversion's instant
function patchAdc() {
  const adc = mcu.adc;
  const AINSEL_SHIFT = 12;
  Object.defineProperty(adc, 'activeChannel', {
    get() { return (this.cs >> AINSEL_SHIFT) & 7; },
    set(ch) { this.cs = (this.cs & ~(7 << AINSEL_SHIFT)) | ((ch & 7) << AINSEL_SHIFT); },
    configurable: true,
  });
  // DREQ_ADC follows the FIFO as on the chip: asserted while DREQ_EN is set and the FIFO holds at least THRESH
  // results (and one). rp2040js updates it only on a push or a CPU read with DREQ_EN set, so a DREQ left asserted
  // when the firmware cleared DREQ_EN stayed asserted over an empty FIFO: a DMA channel started on it later ran
  // its whole count (2^30 reads of the empty FIFO) at one emulated instant, and the emulator stood still for minutes.
  const FCS = 0x08, FCS_DREQ_EN = 1 << 3;
  adc.updateDMA = function () {
    const thres = (this.fcs >> 24) & 0xf;
    const n = this.fifo.itemCount;
    if (this.fcs & FCS_DREQ_EN && n > 0 && n >= thres) this.rp2040.dma.setDREQ(this.dreq);
    else this.rp2040.dma.clearDREQ(this.dreq);
  };
  const origW = adc.writeUint32.bind(adc);
  adc.writeUint32 = (offset, value) => {
    origW(offset, value);
    if (offset === FCS) adc.updateDMA();
  };
  adc.sampleAlarm = clock.createAlarm(() => { adcPending = adc.conv; });
  adc.onADCRead = (channel) => {
    adc.currentChannel = channel;
    adc.conv = { ch: channel, t: nowNs() };
    adc.sampleAlarm.schedule(adc.sampleTime * 1000);       // 96 clk_adc cycles at 48 MHz = 2 us
  };
}

// ---- UART: the TX interrupt is raised when a byte leaves (the FIFO drains at once here), not on every check
function patchUart() {
  for (const u of mcu.uart) {
    const TXINTR = 1 << 5;
    u.checkInterrupts = function () { this.rp2040.setInterrupt(this.irq, !!(this.interruptStatus & this.interruptMask)); };
    const origW = u.writeUint32.bind(u);
    u.writeUint32 = (offset, value) => {
      origW(offset, value);
      if (offset === 0) { u.interruptStatus |= TXINTR; u.checkInterrupts(); }
    };
  }
}

// ------------------------------------------------------------------------------------------------- power
function powerOff() {
  poweredOn = false;
  hung = true;
  usbUp = false;
  for (let g = 0; g < 30; g++) recordLevel(g);
  out({ k: 'usb', up: false, t: nowNs() });
}

function powerOn(reason) {
  newMcu(reason);
  poweredOn = true;
  for (let g = 0; g < 30; g++) recordLevel(g);
}

// ------------------------------------------------------------------------------------------------- run loop
let pendingOut = 0;
function feedHost() {
  if (!usbUp || !hostIn.length || !pendingOut) return;
  const n = Math.min(pendingOut, hostIn.length);
  const chunk = new Uint8Array(hostIn.slice(0, n));
  hostIn = hostIn.slice(n);
  pendingOut = 0;
  cdc.usb.endpointReadDone(cdc.outEndpoint, chunk);
}

function applyDrive(g, level) {
  ext[g] = level;
  if (poweredOn) applyInput(g);
  recordLevel(g);
}

let waiters = [];
function nextMessage(kind) { return new Promise((res) => waiters.push({ kind, res })); }

const stats = { instr: 0, sleeps: 0, hist: {} };
const TRACE = !!process.env.PICOSTIM_EMU_TRACE;
let traceRegion = '', traceLog = [], traceN = 0;
function traceStep(core) {
  const pc = core.PC >>> 0;
  const region = pc < 0x4000 ? 'rom' : pc < 0x20000000 ? 'flash' : 'ram';
  traceN++;
  if (region !== traceRegion) {
    traceLog.push(`${region}:${pc.toString(16)}@${traceN}`);
    traceRegion = region;
    if (traceLog.length > 60) traceLog.shift();
  }
}
process.on('exit', () => { if (TRACE) process.stderr.write(traceLog.join('\n') + '\n'); });

async function runUntil(until) {
  for (;;) {
    const target = until - timeBase;     // (a chip reset restarts the clock: recompute against the new base)
    if (clock.nanos >= target) break;
    if (pendingReset) { const r = pendingReset; pendingReset = null; doChipReset(r.reason, 'wdt'); continue; }
    if (adcPending) {
      const conv = adcPending;
      adcPending = null;
      out({ k: 'adc', t: conv.t, now: nowNs(), ch: conv.ch, e: edges, d: duties });
      edges = []; duties = [];
      const msg = await nextMessage('adcv');
      mcu.adc.completeADCRead(msg.v & 0xfff, false);
      continue;
    }
    feedHost();
    const core = mcu.core;
    if (hung || core.waiting) {
      // WFI (or no CPU): jump to the next alarm, as the chip sleeps until its next interrupt
      stats.sleeps++;
      const na = clock.nextAlarm;
      const to = na ? Math.min(na.nanos, target) : target;
      clock.tick(Math.max(0, to - clock.nanos));
      continue;
    }
    const cyc = clkNsPerCycle();
    for (let i = 0; i < 4096; i++) {
      if (TRACE) traceStep(core);
      const c = core.executeInstruction();
      if ((++stats.instr & 1023) === 0 && TRACE) { const k = (core.PC >>> 0).toString(16); stats.hist[k] = (stats.hist[k] || 0) + 1; }
      clock.tick(c * cyc);
      if (core.waiting || adcPending || pendingReset || hung || clock.nanos >= target) break;
    }
  }
}

async function main() {
  let buf = '';
  process.stdin.on('data', (chunk) => {
    buf += chunk.toString('utf8');
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line);
      if (msg.k === 'in') { for (const b of Buffer.from(msg.b, 'base64')) hostIn.push(b); continue; }
      const i = waiters.findIndex((w) => w.kind === msg.k || w.kind === '*');
      if (i >= 0) waiters.splice(i, 1)[0].res(msg);
      else queue.push(msg);
    }
  });
  process.stdin.on('end', () => process.exit(0));
  const queue = [];
  const take = async () => (queue.length ? queue.shift() : nextMessage('*'));
  powerOn(0);
  out({ k: 'ready', rom: ROM });
  for (;;) {
    const msg = await take();
    switch (msg.k) {
      case 'run': {
        for (const [g, level, t] of msg.drives || []) {
          const lv = level === null ? null : level ? 1 : 0;
          const dt = t - nowNs();
          if (dt <= 0 || !poweredOn) applyDrive(g, lv);
          else clock.createAlarm(() => applyDrive(g, lv)).schedule(dt);   // exactly at its instant
        }
        if (poweredOn) await runUntil(msg.until);
        else { timeBase += Math.max(0, msg.until - nowNs()); }
        dutyIdleCheck();
        out({ k: 'done', t: nowNs(), e: edges, d: duties, idle: !poweredOn || hung || mcu.core.waiting });
        edges = []; duties = [];
        break;
      }
      case 'reset':
        if (!poweredOn) break;
        doChipReset(msg.cause === 'wdt' ? 1 : 0, msg.cause);
        break;
      case 'power':
        if (msg.on && !poweredOn) { powerOn(0); out({ k: 'reset', cause: 'pwron', t: nowNs() }); }
        else if (!msg.on && poweredOn) powerOff();
        break;
      case 'hang':
        hung = true;
        break;
      case 'cut_write': {
        let s = (msg.seed >>> 0) || 1;
        cutArmed = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 4294967296; };
        break;
      }
      case 'peek': {     // debugging / tests: read emulated memory
        const words = [];
        for (let i = 0; i < (msg.n || 1); i++) words.push(mcu.readUint32(msg.addr + 4 * i) >>> 0);
        out({ k: 'peeked', w: words });
        break;
      }
      case 'dbg':
        out({ k: 'dbg', stats, pc: mcu.core.PC >>> 0, waiting: mcu.core.waiting, hung, poweredOn, usbUp, ns: clock.nanos,
                 hostIn: hostIn.length, pendingOut, adcPending: !!adcPending });
        break;
      case 'flash': {    // tests: a slice of the flash chip
        out({ k: 'flashed', b: Buffer.from(flash.subarray(msg.off, msg.off + msg.n)).toString('base64') });
        break;
      }
      default:
        out({ k: 'note', msg: `unknown message ${msg.k}` });
    }
  }
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });
