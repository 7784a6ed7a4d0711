// iPHR kiosk sign-in page. No rules live here: the gateway issues the nonce and validates the
// token; the card agent (on this kiosk's loopback) asks the PIN in its own UI and has the card
// sign. This page only carries the nonce to the agent and the agent's token to the gateway.
"use strict";

(function () {
  const meta = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    return el ? el.getAttribute("content") : "";
  };
  const AGENT_URL = meta("iphr-agent-url");
  const IDLE_SECS = Number.parseInt(meta("iphr-idle-secs"), 10) || 120;
  const SESSION_EXPIRED = "サインインの有効期限が切れました。もう一度カードで本人確認してください";

  const $ = (id) => document.getElementById(id);
  const screens = ["start", "waiting", "signed-in"];
  let signedIn = false;
  let idleTimer = null;

  function show(name) {
    for (const s of screens) {
      $(s).hidden = s !== name;
    }
  }

  function say(text, kind) {
    const m = $("message");
    m.textContent = text || "";
    m.className = kind === "info" ? "message info" : "message";
  }

  const CARD_TYPES = { jpki: "マイナンバーカード", phr: "PHRカード" };

  function date(ms) {
    const d = new Date(ms);
    if (Number.isNaN(d.getTime())) {
      return "不明";
    }
    return `${d.getFullYear()}年${d.getMonth() + 1}月${d.getDate()}日`;
  }

  // Messages for the agent's errors (card-agent/src/local_api.rs).
  function agentMessage(status, body) {
    const error = body && body.error;
    switch (error) {
      case "wrong_pin":
        return `PINが違います。残り ${body.tries_left} 回`;
      case "last_try_needs_confirmation":
        return "PINの残りが 1 回です。次に間違えるとロックされます。カードエージェントの画面で確認のうえ、もう一度お試しください";
      case "pin_blocked":
        return "PINがロックされています。市区町村の窓口で解除してください";
      case "no_card":
        return "カードが見つかりません。カードをリーダーに置いてください";
      case "unsupported_card":
        return "このカードには対応していません。マイナンバーカードまたはPHRカードを置いてください";
      case "pin_not_entered":
        return "PINが入力されませんでした。もう一度お試しください";
      case "busy":
        return "カードエージェントが処理中です。しばらくしてからもう一度お試しください";
      case "card_changed":
        return "途中でカードが替わりました。カードを置き直して、もう一度お試しください";
      case "card_full":
        return "PHRカードの空きがありません。係員にお知らせください";
      case "too_many_categories":
        return "この同意はPHRカードに書き込めない内容です（項目が多すぎます）。係員にお知らせください";
      case "source_not_linked":
        return "このデータ提供元には、まだPHRカードが連携されていません。「データの取り込み」で利用者番号と登録コードを入力して連携してください";
      case "linked_as_another":
        return "このサービスは別の利用者としてPHRカードに登録されています。係員にお知らせください";
      case "phr_card_required":
        return "データの取り込みの連携と許可にはPHRカードが必要です。PHRカードを置いてください";
      case "grant_expired":
        return "同意の期間が終わっています。先に同意し直してください";
      case "consent_not_writable":
      case "document_mismatch":
      case "document_origin":
      case "bad_document":
        return "この同意はPHRカードに書き込めませんでした。係員にお知らせください";
      default:
        if (status === 403) {
          return "このページはカードエージェントに許可されていません。係員にお知らせください";
        }
        return `カードエージェントでエラーが発生しました（${error || status}）`;
    }
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (_) {
      return null;
    }
  }

  function render(info) {
    $("person-id").textContent = info.person_id;
    $("card-type").textContent = CARD_TYPES[info.card_type] || info.card_type;
    const cert = info.certificate || {};
    $("subject").textContent = cert.subject || "";
    $("issuer").textContent = cert.issuer || "";
    $("validity").textContent = `${date(cert.not_before_ms)} 〜 ${date(cert.not_after_ms)}`;
    $("idle-secs").textContent = String(IDLE_SECS);
    signedIn = true;
    show("signed-in");
    touch();
    loadConsent();
    loadSources();
  }

  // ----- consent: each change is a document the card signs (its hash is the nonce).

  function consentSay(text, kind) {
    const m = $("consent-message");
    m.textContent = text || "";
    m.className = kind === "info" ? "message info" : "message";
  }

  function period(current) {
    if (!current || current.status !== "permit") {
      return "";
    }
    return `${date(current.period_start_ms)} 〜 ${date(current.period_end_ms)}`;
  }

  function partnerItem(p) {
    const li = document.createElement("li");
    li.className = "partner";
    li.dataset.service = p.service_id;
    const h = document.createElement("h3");
    h.textContent = p.name;
    const purpose = document.createElement("p");
    purpose.textContent = `利用目的：${p.purpose}`;
    const cats = document.createElement("p");
    cats.textContent = `求めるデータ：${p.categories.map((c) => `${c.label}（${c.unit}）`).join("、")}`;
    const days = document.createElement("p");
    days.textContent = `期間：同意の日から ${p.period_days} 日`;
    const status = document.createElement("p");
    status.className = "status";
    status.textContent = p.in_force ? `同意中（${period(p.current)}）` : "同意していません";
    const button = document.createElement("button");
    button.type = "button";
    button.className = p.in_force ? "secondary" : "primary";
    button.textContent = p.in_force ? "同意を取り消す" : "同意する";
    button.addEventListener("click", () => changeConsent(p, p.in_force ? "revoke" : "grant", button));
    li.append(h, purpose, cats, days, status, button);
    return li;
  }

  async function loadConsent() {
    const list = $("partners");
    list.textContent = "";
    try {
      const r = await fetch("/api/consent");
      if (!r.ok) {
        consentSay("同意の状況を読み込めませんでした");
        return;
      }
      const { partners } = await r.json();
      if (partners.length === 0) {
        consentSay("データ提供を求めているサービスはありません", "info");
      }
      for (const p of partners) {
        list.append(partnerItem(p));
      }
    } catch (_) {
      consentSay("同意の状況を読み込めませんでした");
    }
  }

  // ----- sources: what was pulled, and a pull now with the stored grant, with its progress.

  const PULL_STATES = { running: "取り込み中", done: "完了", partial: "一部のみ取り込み", failed: "失敗", refused: "取り込めません" };

  function pullText(p) {
    const state = PULL_STATES[p.state] || p.state;
    const counts = `一覧 ${p.listed} 件・取得 ${p.fetched} 件・新規保存 ${p.stored} 件・保存済み ${p.duplicates} 件`;
    return p.message ? `${state}：${counts}（${p.message}）` : `${state}：${counts}`;
  }

  function sourceItem(s) {
    const li = document.createElement("li");
    li.className = "partner";
    li.dataset.source = s.id;
    const h = document.createElement("h3");
    h.textContent = s.name;
    const status = document.createElement("p");
    status.className = "status";
    const parts = [s.linked ? "カード連携済み" : "カード未連携", s.consent_in_force ? "同意中" : "同意なし"];
    if (s.grant_expires_at_ms) {
      parts.push(`取り込みの許可は ${date(s.grant_expires_at_ms)} まで`);
    }
    status.textContent = parts.join("・");
    const stored = document.createElement("p");
    stored.className = "stored";
    stored.textContent = `取り込んだファイル：${s.files_stored} 件` + (s.last_pull_ms ? `（最終取り込み ${dateTime(s.last_pull_ms)}）` : "");
    const progress = document.createElement("p");
    progress.className = "progress";
    progress.setAttribute("role", "status");
    li.append(h, status, stored, progress);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    if (!s.linked) {
      // The source's enrollment letter gives the person's number there and a one-time code.
      const form = document.createElement("div");
      form.className = "link-form";
      form.append(
        field("利用者番号", "pseudonym", 64),
        field("登録コード", "enrollment-code", 64),
      );
      button.classList.add("link");
      button.textContent = "カードを連携して同意する";
      button.addEventListener("click", () => linkCard(s, li, button, progress));
      li.append(form, button);
    } else if (s.consent_in_force && !(s.grant_expires_at_ms > Date.now())) {
      button.classList.add("grant");
      button.textContent = "取り込みを許可する";
      button.addEventListener("click", () => grantAndPull(s, button, progress));
      li.append(button);
    } else if (s.grant_expires_at_ms) {
      button.classList.add("pull");
      button.textContent = "今すぐ取り込む";
      button.addEventListener("click", () => pullNow(s, button, progress));
      li.append(button);
    }
    return li;
  }

  function field(label, name, maxLength) {
    const l = document.createElement("label");
    l.textContent = label;
    const input = document.createElement("input");
    input.type = "text";
    input.className = name;
    input.maxLength = maxLength;
    input.autocomplete = "off";
    l.append(input);
    return l;
  }

  // Consent to the source, the card recording it and making the source's key for the person's
  // number there (one PIN in the agent); then the gateway hands the card's certificates to the
  // source with the enrollment code.
  async function linkCard(s, li, button, progress) {
    const pseudonym = li.querySelector("input.pseudonym").value.trim();
    const code = li.querySelector("input.enrollment-code").value.trim();
    if (!pseudonym || !code) {
      progress.textContent = "登録のご案内にある利用者番号と登録コードを入力してください";
      return;
    }
    button.disabled = true;
    try {
      if (!s.consent_in_force) {
        await consentOnCard(s.id, "grant", "source", pseudonym, (text) => {
          progress.textContent = text;
        });
        // A retry (say, after a mistyped code) needs no second consent.
        s.consent_in_force = true;
      }
      progress.textContent = "提供元にカードを登録しています…";
      const certs = JSON.parse(
        await agentCall("/v1/link", { service_id: s.id, pseudonym }, "カードエージェントに接続できません"),
      );
      const r = await fetch(`/api/sources/${encodeURIComponent(s.id)}/link`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ enrollment_code: code, ...certs }),
      });
      const body = await readJson(r);
      if (!r.ok) {
        throw new Failure(sourceMessage(r, body, "カードを連携できませんでした"));
      }
      await loadSources();
      await loadConsent();
      $("sources-message").textContent = `${s.name} とカードを連携し、同意しました。「取り込みを許可する」で取り込みを始められます`;
    } catch (e) {
      progress.textContent = e instanceof Failure ? e.message : "エラーが発生しました。もう一度お試しください";
      button.disabled = false;
    }
  }

  // The gateway asks the source for a nonce; the card signs the grant with the source's key
  // (PIN in the agent); the gateway checks it and starts a pull.
  async function grantAndPull(s, button, progress) {
    button.disabled = true;
    progress.textContent = "取り込みの許可を準備しています…";
    try {
      const id = encodeURIComponent(s.id);
      const asked = await fetch(`/api/sources/${id}/grant-request`, { method: "POST" });
      const request = await readJson(asked);
      if (!asked.ok || !request) {
        throw new Failure(sourceMessage(asked, request, "取り込みの許可を準備できませんでした"));
      }
      progress.textContent = "カードで署名してください（PINはカードエージェントの画面で入力）";
      const signed = await agentCall("/v1/grant", { request }, "カードエージェントに接続できません");
      const r = await fetch(`/api/sources/${id}/grant`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: signed,
      });
      const body = await readJson(r);
      if (!r.ok || !body || !body.pull) {
        throw new Failure(sourceMessage(r, body, "取り込みの許可を保存できませんでした"));
      }
      await followPull(s, body.pull, button, progress);
      // The list again (the grant's end date, 「今すぐ取り込む」), keeping the pull's outcome.
      const outcome = progress.textContent;
      await loadSources();
      const item = document.querySelector(`#source-list li[data-source="${CSS.escape(s.id)}"] .progress`);
      if (item) {
        item.textContent = outcome;
      }
    } catch (e) {
      progress.textContent = e instanceof Failure ? e.message : "エラーが発生しました。もう一度お試しください";
      button.disabled = false;
    }
  }

  function sourceMessage(response, body, fallback) {
    if (response.status === 401) {
      return SESSION_EXPIRED;
    }
    return (body && body.message) || `${fallback}（${response.status}）`;
  }

  async function loadSources() {
    const list = $("source-list");
    list.textContent = "";
    $("sources-message").textContent = "";
    try {
      const r = await fetch("/api/sources");
      if (r.status === 404) {
        $("sources").hidden = true;
        return;
      }
      if (!r.ok) {
        $("sources-message").textContent = "取り込みの状況を読み込めませんでした";
        return;
      }
      const { sources } = await r.json();
      $("sources").hidden = false;
      for (const s of sources) {
        list.append(sourceItem(s));
      }
    } catch (_) {
      $("sources-message").textContent = "取り込みの状況を読み込めませんでした";
    }
  }

  async function pullNow(s, button, progress) {
    button.disabled = true;
    progress.textContent = "取り込みを始めています…";
    try {
      const started = await fetch(`/api/sources/${encodeURIComponent(s.id)}/pull`, { method: "POST" });
      const body = await readJson(started);
      if (!started.ok || !body || !body.pull) {
        progress.textContent = (body && body.message) || "取り込みを始められませんでした";
        button.disabled = false;
        return;
      }
      await followPull(s, body.pull, button, progress);
    } catch (_) {
      progress.textContent = "取り込みの状況を読み込めませんでした";
    }
    button.disabled = false;
  }

  // Shows a pull's progress until it ends, then the source's stored-file count.
  async function followPull(s, pull, button, progress) {
    try {
      for (;;) {
        const r = await fetch(`/api/sources/pulls/${encodeURIComponent(pull)}`);
        const p = await readJson(r);
        if (!r.ok || !p) {
          progress.textContent = "取り込みの状況を読み込めませんでした";
          break;
        }
        progress.textContent = pullText(p);
        if (p.state !== "running") {
          const stored = button.parentElement.querySelector(".stored");
          const overview = await fetch("/api/sources");
          if (overview.ok) {
            const now = (await overview.json()).sources.find((x) => x.id === s.id);
            if (now && stored) {
              stored.textContent = `取り込んだファイル：${now.files_stored} 件` + (now.last_pull_ms ? `（最終取り込み ${dateTime(now.last_pull_ms)}）` : "");
            }
          }
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
    } catch (_) {
      progress.textContent = "取り込みの状況を読み込めませんでした";
    }
    button.disabled = false;
  }

  const ACTIONS = { read: "1件の読み取り", search: "検索", everything: "全データの取得", export: "一括エクスポート" };

  function dateTime(ms) {
    const d = new Date(ms);
    const pad = (n) => String(n).padStart(2, "0");
    return `${date(ms)} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  async function showHistory() {
    const rows = $("history-rows");
    rows.textContent = "";
    $("history-message").textContent = "";
    try {
      const r = await fetch("/api/history");
      if (!r.ok) {
        $("history-message").textContent = "アクセス履歴を読み込めませんでした";
        return;
      }
      const { accesses } = await r.json();
      if (accesses.length === 0) {
        $("history-table").hidden = true;
        $("history-message").textContent = "あなたのデータを読んだサービスはまだありません";
        return;
      }
      for (const a of accesses) {
        const tr = document.createElement("tr");
        for (const text of [
          dateTime(a.at_ms),
          a.partner_name || a.partner,
          ACTIONS[a.action] || a.action,
          a.outcome === "permit" ? "提供" : "拒否",
          String(a.served),
        ]) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.append(td);
        }
        rows.append(tr);
      }
      $("history-table").hidden = false;
    } catch (_) {
      $("history-message").textContent = "アクセス履歴を読み込めませんでした";
    }
  }

  async function changeConsent(p, action, button) {
    consentSay("");
    button.disabled = true;
    try {
      await consentOnCard(p.service_id, action, p.kind, null, (text) => consentSay(text, "info"));
      await loadConsent();
      await loadSources();
      consentSay(action === "grant" ? `${p.name} へのデータ提供に同意しました` : `${p.name} への同意を取り消しました`, "info");
    } catch (e) {
      consentSay(e instanceof Failure ? e.message : "エラーが発生しました。もう一度お試しください");
    } finally {
      button.disabled = false;
    }
  }

  // Prepare → the card signs (a PHR card also records the change, linking a source under
  // `pseudonym` when given) → commit. Throws a Failure with a Japanese message.
  async function consentOnCard(serviceId, action, kind, pseudonym, progress) {
    const prepared = await fetch("/api/consent/prepare", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ service_id: serviceId, action }),
    });
    if (prepared.status === 401) {
      throw new Failure(SESSION_EXPIRED);
    }
    if (!prepared.ok) {
      throw new Failure(`同意の準備ができませんでした（${prepared.status}）`);
    }
    const { nonce, document: doc, known_categories: known } = await prepared.json();
    progress("カードで署名してください（PINはカードエージェントの画面で入力）");
    // A PHR card also records the change on the card; the agent's answer then carries it
    // (card_record) and goes to the gateway as-is.
    const request = { nonce, document: doc, known_categories: known, service_kind: kind };
    if (pseudonym) {
      request.pseudonym = pseudonym;
    }
    const token = await agentCall("/v1/consent", request, "カードエージェントに接続できません");
    const committed = await fetch("/api/consent/commit", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: token,
    });
    if (committed.status === 401) {
      throw new Failure("カードの署名を確認できませんでした。サインインしたカードで署名してください");
    }
    if (committed.status === 409) {
      throw new Failure("同意の状況が変わったか、有効期限が切れました。もう一度お試しください");
    }
    if (!committed.ok) {
      throw new Failure(`同意を保存できませんでした（${committed.status}）`);
    }
  }

  class Failure extends Error {}

  // The card agent signs `nonce` (the PIN is asked in the agent's own UI): its token, as-is.
  async function cardToken(nonce, unreachable) {
    return agentCall("/v1/authenticate", { nonce }, unreachable);
  }

  async function agentCall(path, body, unreachable) {
    let agentResponse;
    try {
      agentResponse = await fetch(`${AGENT_URL}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (_) {
      throw new Failure(unreachable);
    }
    if (!agentResponse.ok) {
      throw new Failure(agentMessage(agentResponse.status, await readJson(agentResponse)));
    }
    return agentResponse.text();
  }

  // ----- the worker's own record: export (a download) and erasure (signed by the card).

  function note(id, text, kind) {
    const m = $(id);
    m.textContent = text || "";
    m.className = kind === "info" ? "message info" : "message";
  }

  const REAUTH = "カードでの本人確認から時間がたちました。サインアウトして、もう一度カードで本人確認してください";

  async function exportRecord() {
    note("export-message", "");
    $("export").disabled = true;
    try {
      const r = await fetch("/api/export");
      const text = await r.text();
      if (r.status === 401) {
        let body = null;
        try {
          body = JSON.parse(text);
        } catch (_) {
          // Not JSON: treated as not signed in.
        }
        throw new Failure(body && body.error === "reauthentication_required" ? REAUTH : SESSION_EXPIRED);
      }
      if (!r.ok) {
        throw new Failure(`書き出しができませんでした（${r.status}）`);
      }
      const count = (JSON.parse(text).entry || []).length;
      const disposition = r.headers.get("content-disposition") || "";
      const match = /filename="([^"]+)"/.exec(disposition);
      const name = match ? match[1] : "iphr.iphr-export.json";
      const url = URL.createObjectURL(new Blob([text], { type: "application/fhir+json" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      note("export-message", `記録 ${count} 件を書き出しました（${name}）`, "info");
    } catch (e) {
      note("export-message", e instanceof Failure ? e.message : "エラーが発生しました。もう一度お試しください");
    } finally {
      $("export").disabled = false;
    }
  }

  let erasureNonce = null;

  async function prepareErasure() {
    note("erase-message", "");
    $("erase").disabled = true;
    try {
      const r = await fetch("/api/erasure/prepare", { method: "POST" });
      if (r.status === 401) {
        throw new Failure(SESSION_EXPIRED);
      }
      if (!r.ok) {
        throw new Failure(`消去の準備ができませんでした（${r.status}）`);
      }
      const prepared = await r.json();
      erasureNonce = prepared.nonce;
      const p = prepared.preview;
      $("erase-summary").textContent = `保存されている記録 ${p.resources} 件を消去し、同意 ${p.consents_revoked} 件と取り込みの連携 ${p.source_links} 件を取り消します。この操作は元に戻せません。よろしければカードで署名してください`;
      $("erase-confirm").hidden = false;
    } catch (e) {
      note("erase-message", e instanceof Failure ? e.message : "エラーが発生しました。もう一度お試しください");
      $("erase").disabled = false;
    }
  }

  function cancelErasure() {
    erasureNonce = null;
    $("erase-confirm").hidden = true;
    $("erase").disabled = false;
    note("erase-message", "消去を取りやめました", "info");
  }

  async function commitErasure() {
    const nonce = erasureNonce;
    if (!nonce) {
      return;
    }
    $("erase-sign").disabled = true;
    note("erase-message", "カードで署名してください（PINはカードエージェントの画面で入力）", "info");
    try {
      const token = await cardToken(nonce, "カードエージェントに接続できません");
      const committed = await fetch("/api/erasure/commit", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: token,
      });
      const body = await readJson(committed);
      if (committed.status === 401) {
        throw new Failure("カードの署名を確認できませんでした。サインインしたカードで署名してください");
      }
      if (committed.status === 409 && body && body.error === "pull_in_progress") {
        throw new Failure("データの取り込み中のため消去できませんでした。取り込みが終わってから、もう一度お試しください");
      }
      if (committed.status === 409) {
        throw new Failure("消去の有効期限が切れました。もう一度お試しください");
      }
      if (!committed.ok || !body || !body.erasure) {
        throw new Failure(`消去できませんでした（${committed.status}）`);
      }
      const e = body.erasure;
      note("erase-message", `データを消去しました（記録 ${e.counts.resources} 件、取り消した同意 ${e.counts.consents_revoked} 件）。バックアップからも ${date(e.backup_purge_due_ms)} までに消去されます`, "info");
      await loadConsent();
      await loadSources();
    } catch (e) {
      note("erase-message", e instanceof Failure ? e.message : "エラーが発生しました。もう一度お試しください");
    } finally {
      erasureNonce = null;
      $("erase-confirm").hidden = true;
      $("erase-sign").disabled = false;
      $("erase").disabled = false;
    }
  }

  async function signIn() {
    say("");
    $("sign-in").disabled = true;
    try {
      const nonceResponse = await fetch("/api/auth/nonce", { method: "POST" });
      if (!nonceResponse.ok) {
        throw new Failure("サーバーに接続できませんでした。もう一度お試しください");
      }
      const { nonce } = await nonceResponse.json();

      show("waiting");
      const token = await cardToken(nonce, "カードエージェントに接続できません。カードエージェントが起動しているか確認してください");

      const tokenResponse = await fetch("/api/auth/token", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: token,
      });
      if (tokenResponse.status === 401) {
        throw new Failure("本人確認できませんでした。有効なカードか確認してください");
      }
      if (!tokenResponse.ok) {
        throw new Failure(`サーバーでエラーが発生しました（${tokenResponse.status}）`);
      }
      render(await tokenResponse.json());
    } catch (e) {
      show("start");
      say(e instanceof Failure ? e.message : "エラーが発生しました。もう一度お試しください");
    } finally {
      $("sign-in").disabled = false;
    }
  }

  async function signOut(message) {
    signedIn = false;
    clearTimeout(idleTimer);
    try {
      await fetch("/api/auth/signout", { method: "POST" });
    } catch (_) {
      // The server session also ends on its own idle timeout.
    }
    for (const id of ["person-id", "card-type", "subject", "issuer", "validity", "partners", "consent-message", "source-list", "sources-message", "history-rows", "history-message", "export-message", "erase-message", "erase-summary"]) {
      $(id).textContent = "";
    }
    $("history-table").hidden = true;
    erasureNonce = null;
    $("erase-confirm").hidden = true;
    $("erase").disabled = false;
    show("start");
    say(message, "info");
  }

  // Kiosk idle timeout: the same length as the server's session idle timeout.
  function touch() {
    if (!signedIn) {
      return;
    }
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => {
      signOut("一定時間操作がなかったため、サインアウトしました");
    }, IDLE_SECS * 1000);
  }

  for (const type of ["pointerdown", "keydown", "touchstart", "wheel"]) {
    document.addEventListener(type, touch, { passive: true });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    $("sign-in").addEventListener("click", signIn);
    $("sign-out").addEventListener("click", () => signOut("サインアウトしました"));
    $("show-history").addEventListener("click", showHistory);
    $("export").addEventListener("click", exportRecord);
    $("erase").addEventListener("click", prepareErasure);
    $("erase-cancel").addEventListener("click", cancelErasure);
    $("erase-sign").addEventListener("click", commitErasure);
    try {
      const r = await fetch("/api/session");
      if (r.ok) {
        render(await r.json());
        return;
      }
    } catch (_) {
      // Start screen.
    }
    show("start");
  });
})();
