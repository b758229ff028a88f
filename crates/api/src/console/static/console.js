// consentry console: sortable tables. Every table with class "sortable" gets a button in each
// column header (so sorting works from the keyboard); the header says how it is sorted
// (aria-sort). Cells sort by their data-sort attribute when present, else by their text, as
// numbers when both look like numbers. The console works without this script.
"use strict";

function cellKey(row, column) {
  const cell = row.cells[column];
  if (!cell) return "";
  return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
}

function asNumber(text) {
  const plain = text.replace(/,/g, "");
  return /^-?\d+(\.\d+)?$/.test(plain) ? Number(plain) : null;
}

function sortTable(table, column, header) {
  const body = table.tBodies[0];
  if (!body) return;
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  const rows = Array.from(body.rows);
  rows.sort(function (a, b) {
    const x = cellKey(a, column);
    const y = cellKey(b, column);
    const nx = asNumber(x);
    const ny = asNumber(y);
    const order = nx !== null && ny !== null ? nx - ny : x.localeCompare(y);
    return ascending ? order : -order;
  });
  for (const th of table.tHead.rows[0].cells) th.removeAttribute("aria-sort");
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  for (const row of rows) body.appendChild(row);
}

function makeSortable(table) {
  if (!table.tHead || !table.tHead.rows.length) return;
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach(function (header, column) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sort";
    button.textContent = header.textContent;
    button.setAttribute("aria-label", "Sort by " + header.textContent);
    button.addEventListener("click", function () { sortTable(table, column, header); });
    header.textContent = "";
    header.appendChild(button);
  });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.sortable").forEach(makeSortable);
});
