// The WeChat simulator's page script (our own; no library). Every message goes to
// /simulator/send, which signs it as WeChat does and posts it to /wechat; what the bot
// pushes later is read from /simulator/inbox. Text from the bot is set as text, never as
// markup: only the parts the server found (taps, links) become buttons and links.
(function () {
  "use strict";
  var root = document.getElementById("sim");
  if (!root) return;
  var openid = root.dataset.openid;
  var chat = document.getElementById("chat");
  var input = document.getElementById("text");
  var voice = document.getElementById("voice");
  var queue = Promise.resolve();
  var after = 0;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scroll() { chat.scrollTop = chat.scrollHeight; }

  function note(text) { chat.appendChild(el("p", "note", text)); scroll(); }

  function mine(text) {
    var row = el("div", "msg me");
    row.appendChild(el("div", "bubble", text));
    chat.appendChild(row);
    scroll();
  }

  function parts(bubble, list) {
    list.forEach(function (p) {
      if (p.tap !== undefined) {
        var b = el("button", "tap", p.tap);
        b.type = "button";
        b.dataset.content = p.content;
        b.dataset.menuId = p.menu_id;
        b.addEventListener("click", function () {
          mine(p.content);
          say({kind: "tap", content: p.content, menu_id: p.menu_id});
        });
        bubble.appendChild(b);
      } else if (p.link !== undefined) {
        var a = el("a", "", p.link);
        a.href = p.href;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        bubble.appendChild(a);
      } else {
        bubble.appendChild(document.createTextNode(p.text));
      }
    });
  }

  function theirs(list, via) {
    var row = el("div", "msg bot");
    var bubble = el("div", "bubble");
    if (via) bubble.appendChild(el("span", "via", via));
    parts(bubble, list);
    row.appendChild(bubble);
    chat.appendChild(row);
    scroll();
  }

  function card(m) {
    var row = el("div", "msg bot");
    var box = el("article", "card");
    box.appendChild(el("h2", "", m.title));
    var dl = el("dl");
    m.fields.forEach(function (f) {
      dl.appendChild(el("dt", "", f.label));
      dl.appendChild(el("dd", "", f.value));
    });
    box.appendChild(dl);
    if (m.url) {
      var a = el("a", "more", "详情");
      a.href = m.url;
      a.rel = "noopener noreferrer";
      box.appendChild(a);
    }
    row.appendChild(box);
    chat.appendChild(row);
    scroll();
  }

  function post(message) {
    message.openid = openid;
    return fetch("/simulator/send", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(message), credentials: "same-origin"
    }).then(function (res) {
      return res.json().then(function (data) {
        if (!res.ok) { note(data.error || ("HTTP " + res.status)); return; }
        if (!data.reply) return;
        if (data.reply.note) { note(data.reply.note); return; }
        theirs(data.reply.parts);
      });
    }).catch(function () { note("发送失败：服务器没有答复"); });
  }

  // One message at a time, in order, as from one phone.
  function say(message) { queue = queue.then(function () { return post(message); }); }

  function poll() {
    fetch("/simulator/inbox?openid=" + encodeURIComponent(openid) + "&after=" + after,
          {credentials: "same-origin"})
      .then(function (res) { return res.json(); })
      .then(function (data) {
        (data.messages || []).forEach(function (m) {
          if (m.kind === "template") card(m);
          else theirs(m.parts, m.kind === "mass" ? "群发消息" : "");
        });
        if (typeof data.next === "number") after = data.next;
      })
      .catch(function () {})
      .then(function () { setTimeout(poll, 1000); });
  }

  document.getElementById("say").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    var isVoice = voice.getAttribute("aria-pressed") === "true";
    mine(isVoice ? "[语音] " + text : text);
    say({kind: isVoice ? "voice" : "text", content: text});
  });

  voice.addEventListener("click", function () {
    var on = voice.getAttribute("aria-pressed") !== "true";
    voice.setAttribute("aria-pressed", on ? "true" : "false");
    input.placeholder = on ? "语音：输入识别出的文字" : "输入消息";
    input.focus();
  });

  var tops = document.querySelectorAll(".top");
  function closeMenus(except) {
    tops.forEach(function (t) {
      if (t === except) return;
      t.querySelector(".sub").hidden = true;
      t.querySelector(".top-btn").setAttribute("aria-expanded", "false");
    });
  }
  tops.forEach(function (top) {
    var btn = top.querySelector(".top-btn");
    var sub = top.querySelector(".sub");
    btn.addEventListener("click", function () {
      closeMenus(top);
      sub.hidden = !sub.hidden;
      btn.setAttribute("aria-expanded", sub.hidden ? "false" : "true");
    });
    sub.querySelectorAll(".entry").forEach(function (entry) {
      entry.addEventListener("click", function () {
        closeMenus(null);
        note("菜单：" + entry.textContent);
        say({kind: "click", key: entry.dataset.key});
      });
    });
  });

  if (root.dataset.new === "1") { note("关注了公众号"); say({kind: "subscribe"}); }
  poll();
})();
